//! The integration tests, one test binary: each suite is a module (its old
//! binary's name), so a test's path reads `pam_login::...` and
//! `tests/it/common/`, the harness, is compiled once. Select a suite with a
//! nextest filter on that path: `cargo nextest run --release -E
//! 'test(/^pam_login::/)'` (CONTRIBUTING.md, "Test").

mod common;

mod attack_claim_cte;
mod attack_marks;
mod attack_prompts;
mod attack_retired;
mod attack_retired_again;
mod attack_same_key_settle;
mod attack_sealing;
mod attack_third;
mod attack_twins_again;

mod docs;
mod e2e_policies;
mod e2e_sshd;
mod file_trust;
mod help_desk_limits;
mod hostile_input;
mod import_homes;
mod lean_module;
mod oathtool_oracle;
mod pam_login;
mod pam_race;
#[cfg(feature = "postgres")]
mod pg_pool;
#[cfg(feature = "postgres")]
mod pg_tls;
mod properties;
mod secrets_stay_secret;
mod store_contract;
mod store_faults;
mod token_life;
mod totp_user;
mod totpctl_cli;
