//! The server processes under a benchmark, on 127.0.0.1, and how the clients reach them.

use super::*;

/// The database a benchmark runs on: the given PostgreSQL URL, or SQLite in `dir`.
pub(crate) fn database_of(
    dir: &Path,
    given: &Option<String>,
    replicas: usize,
) -> Result<String, String> {
    match given {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(url.clone())
        }
        Some(other) => Err(format!(
            "--database takes a postgres:// URL (SQLite is the default), not {other}"
        )),
        None if replicas > 1 => Err("--replicas needs --database postgres://…".into()),
        None => Ok(dir.join("cpis.db").to_string_lossy().into_owned()),
    }
}

pub(crate) fn backend_name(db: &str, replicas: usize) -> String {
    match replica_size(replicas) {
        _ if !db.starts_with("postgres") => "SQLite".into(),
        Some(size) => format!(
            "PostgreSQL, {replicas} server processes, each sized to {} core(s): {}, {}",
            size.cores,
            size.workers_text(),
            size.writers_text()
        ),
        None => format!("PostgreSQL, {replicas} server process(es)"),
    }
}

/// What each of several replicas on this one machine is given: its share of the cores, as a
/// deployment gives each replica its own (a container's CPU limit, from which the server's
/// defaults follow). `CPIS_WORKERS` or `CPIS_DB_WRITERS` in the benchmark's environment win.
pub(crate) struct ReplicaSize {
    cores: usize,
    workers: Option<String>,
    writers: Option<String>,
}

impl ReplicaSize {
    fn workers_text(&self) -> String {
        match &self.workers {
            Some(w) => format!("{w} HTTP worker(s)"),
            None => "HTTP workers as configured".into(),
        }
    }

    fn writers_text(&self) -> String {
        match &self.writers {
            Some(w) => format!("{w} database writer(s)"),
            None => "database writers as configured".into(),
        }
    }
}

/// `None` for one server: it has the machine, and its defaults follow.
pub(crate) fn replica_size(replicas: usize) -> Option<ReplicaSize> {
    if replicas <= 1 {
        return None;
    }
    let cores = (std::thread::available_parallelism().map_or(2, |n| n.get()) / replicas).max(1);
    let unless_set = |name: &str, value: String| std::env::var_os(name).is_none().then_some(value);
    Some(ReplicaSize {
        cores,
        workers: unless_set("CPIS_WORKERS", cores.to_string()),
        writers: unless_set(
            "CPIS_DB_WRITERS",
            cpis_fhir::config::default_db_writers(cores).to_string(),
        ),
    })
}

/// The server processes under a benchmark.
pub(crate) struct Servers {
    children: Vec<Child>,
    pub(crate) ports: Vec<u16>,
}

impl Servers {
    /// Stops them; the largest peak RSS among them (KiB).
    pub(crate) fn stop(mut self) -> Option<u64> {
        let rss = self
            .children
            .iter()
            .filter_map(|c| peak_rss_kib(c.id()))
            .max();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        rss
    }

    /// CPU time (user and system) the server processes have used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        self.children.iter().map(|c| cpu_seconds_of(c.id())).sum()
    }
}

/// User plus system CPU time of a process, from `/proc/{pid}/stat` (fields 14 and 15, in
/// clock ticks of 1/100 s: Linux's `USER_HZ` is 100 wherever this benchmark runs).
pub(crate) fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// The benchmark's TLS client: trusts the data directory's development CA, whose server
/// certificate it makes (once) for the servers.
pub(crate) fn tls_client(dir: &Path) -> Result<openssl::ssl::SslConnector, String> {
    cpis_fhir::tls::ensure_dev_certificates(dir)?;
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .map_err(|e| e.to_string())?;
    b.set_ca_file(dir.join("dev-ca.pem"))
        .map_err(|e| e.to_string())?;
    Ok(b.build())
}

/// A stream to a server: plain, or TLS through `tls`.
pub(crate) trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

pub(crate) fn connect(
    port: u16,
    tls: Option<&openssl::ssl::SslConnector>,
) -> Result<Box<dyn Conn>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(c) => Ok(Box::new(
            c.connect("127.0.0.1", tcp).map_err(|e| e.to_string())?,
        )),
    }
}

/// `replicas` servers over one database, on `port`, `port + 10`, …
pub(crate) fn start_servers(
    dir: &Path,
    port: u16,
    database: &Option<String>,
    replicas: usize,
    tls: Option<&openssl::ssl::SslConnector>,
) -> Result<Servers, String> {
    let mut servers = Servers {
        children: Vec::new(),
        ports: Vec::new(),
    };
    let size = replica_size(replicas);
    for r in 0..replicas.max(1) {
        let p = port + 10 * r as u16;
        servers.children.push(start_server_on(
            dir,
            p,
            false,
            database.as_deref(),
            tls,
            size.as_ref(),
        )?);
        servers.ports.push(p);
    }
    Ok(servers)
}

/// Starts the server over `dir`: trusting the dev key as a production key, or (`dev`) in dev
/// mode with its demo councils and people.
pub(crate) fn start_server(dir: &Path, port: u16, dev: bool) -> Result<Child, String> {
    start_server_on(dir, port, dev, None, None, None)
}

/// [`start_server`] over `database` (default: SQLite in `dir`), over TLS with `tls`, sized as
/// one of several replicas with `size`.
pub(crate) fn start_server_on(
    dir: &Path,
    port: u16,
    dev: bool,
    database: Option<&str>,
    tls: Option<&openssl::ssl::SslConnector>,
    size: Option<&ReplicaSize>,
) -> Result<Child, String> {
    let exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("cpis-fhir");
    let mut command = Command::new(&exe);
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir);
    if let Some(url) = database {
        command.args(["--database", url]);
    }
    if tls.is_some() {
        command
            .env("CPIS_TLS_CERT_FILE", dir.join("dev-server.pem"))
            .env("CPIS_TLS_KEY_FILE", dir.join("dev-server.key"));
    }
    if let Some(size) = size {
        if let Some(w) = &size.workers {
            command.env("CPIS_WORKERS", w);
        }
        if let Some(w) = &size.writers {
            command.env("CPIS_DB_WRITERS", w);
        }
    }
    if dev {
        // The fuzzer creates subscriptions from mutated input: the server under it never posts
        // notifications (nor resolves their hosts).
        command.arg("--dev").env("CPIS_NOTIFY_INTERVAL_MS", "0");
    } else {
        command
            .env(
                "CPIS_AUTH_PUBLIC_KEY_FILE",
                dir.join("dev-signing-key.pub.pem"),
            )
            .env("CPIS_AUTH_ISSUER", dev::DEV_ISSUER);
    }
    let child = command
        // One clinician makes every look-up: the limits are set out of reach (still counted).
        .env("CPIS_LIMITS_LOOKUPS_PER_USER_PER_MINUTE", "1000000000")
        .env("CPIS_LIMITS_LOOKUPS_PER_ORG_PER_MINUTE", "1000000000")
        // One bench user looks up the whole register: the misuse watch's warning AuditEvent
        // is not a look-up's, and would spoil "audit == 2xx".
        .env("CPIS_LIMITS_FISHING_DISTINCT_PEOPLE", "0")
        .env("CPIS_ALLOW_TEST_NHS_NUMBERS", "true")
        .env("CPIS_NOTIFY_ALLOW_HTTP_LOOPBACK", "true")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with cargo build --release)",
                exe.display()
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = connect(port, tls) {
            let _ = s.write_all(b"GET /metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(child);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not start".into())
}

pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A figure in KiB from `/proc/{pid}/status` (`VmHWM:` peak RSS, `VmRSS:` RSS now).
pub(crate) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
