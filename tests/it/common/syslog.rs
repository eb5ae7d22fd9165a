//! What totpctl and totp write to syslog, captured: the audit lines of
//! both commands (`logline::audit_line`), read back as a log reader reads
//! them.

/// The `key=value` parts of an audit line `<85>totpctl[PID]: ACTION
/// key=value key="escaped value" … by WHO` (totp's alike), read as a log
/// reader reads them: a quoted value ends at the first quote no backslash
/// escapes.
pub fn audit_keys(line: &str) -> Vec<String> {
    let (_, rest) = line.split_once("]: ").expect("syslog prefix");
    let (_, mut rest) = rest.split_once(' ').expect("action");
    let mut keys = Vec::new();
    while !rest.starts_with("by ") {
        let (key, value) = rest.split_once('=').expect("key=value");
        assert!(!key.contains([' ', '"']), "not a key: {key:?} in {line}");
        keys.push(key.to_string());
        let end = match value.strip_prefix('"') {
            Some(quoted) => {
                let mut chars = quoted.char_indices();
                loop {
                    match chars.next().expect("unterminated quotes") {
                        (_, '\\') => {
                            chars.next();
                        }
                        (i, '"') => break i + 2,
                        _ => {}
                    }
                }
            }
            None => value.find(' ').expect("a part after the value"),
        };
        rest = value[end..]
            .strip_prefix(' ')
            .expect("a space after a value");
    }
    keys
}

/// What reaches /dev/log while a test runs: the test binds the socket for
/// its duration (under the same lock as the sshd tests, which the caller
/// holds) on a machine without a syslog socket of its own; `None` (a skip,
/// a failure under CI=true) where the machine's syslog has it.
pub struct SyslogCapture {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<Vec<String>>,
    _unlink: Unlink,
}

struct Unlink;

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/dev/log");
    }
}

impl SyslogCapture {
    pub fn start() -> Option<SyslogCapture> {
        use std::os::unix::net::UnixDatagram;
        // A socket nobody listens on is a leftover of a killed test run.
        let stale = UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if stale {
            let _ = std::fs::remove_file("/dev/log");
        }
        if std::fs::symlink_metadata("/dev/log").is_ok() {
            let message =
                "/dev/log is taken by this machine's syslog; audit lines cannot be captured here";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let socket = UnixDatagram::bind("/dev/log").expect("bind /dev/log");
        let unlink = Unlink;
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        // Read from the start and all along: while /dev/log is this socket,
        // every process on the machine logs into it (modules that other
        // tests run outside pam_wrapper too), and a sender blocks once the
        // queue is full, totpctl included.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                let mut buf = [0u8; 2048];
                let mut last_line = std::time::Instant::now();
                let mut done_at = None;
                loop {
                    if let Ok(n) = socket.recv(&mut buf) {
                        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        last_line = std::time::Instant::now();
                    }
                    // Once the test is done: until quiet for 500 ms (other
                    // tests' runs may still arrive), at most 10 s more.
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        let done_at = *done_at.get_or_insert_with(std::time::Instant::now);
                        if last_line.elapsed() >= std::time::Duration::from_millis(500)
                            || done_at.elapsed() >= std::time::Duration::from_secs(10)
                        {
                            break;
                        }
                    }
                }
                lines
            })
        };
        Some(SyslogCapture {
            done,
            reader,
            _unlink: unlink,
        })
    }

    /// Every line received, once the senders are quiet.
    pub fn finish(self) -> Vec<String> {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.reader.join().expect("syslog reader")
    }
}
