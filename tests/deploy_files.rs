//! The deploy files agree with the binary they deploy.
//!
//! * Terraform (`deploy/terraform`): parsed with python-hcl2; the ALB idle
//!   timeout exceeds the ping interval, the deregistration delay exceeds the
//!   drain timeout, stickiness is `app_cookie` on the binary's cookie name,
//!   the health check is the binary's health path with matcher 200, the 5xx
//!   and response-time alarms exist, access logs go to S3 with an Athena
//!   table (whose regex parses a WebSocket log line) and a saved query over
//!   consecutive reconnects; every variable that mirrors a flag names the
//!   flag and defaults to the binary's default.
//! * Kubernetes (`deploy/k8s`): parsed with PyYAML; the grace period covers
//!   preStop + drain, readiness on the health path (liveness not), the two
//!   ports, non-root, read-only root fs, the Ingress's ALB attributes.
//! * `Dockerfile`: multi-stage, non-root USER, exec-form ENTRYPOINT, EXPOSE
//!   of both ports, a HEALTHCHECK on the health path, and the build stage
//!   copies every target Cargo.toml declares (past `.dockerignore`).
//! * checkov over `deploy/` and the Dockerfile: no failed check; each skip
//!   carries a reason.
//!
//! The binary's defaults come from `wsgate --help`, so a change on either
//! side breaks this test. Python packages (pinned) are installed on first use
//! into virtualenvs under `~/.cache/wsgate/` (`$WSGATE_CACHE_DIR` overrides),
//! made with the machine's `python3 -m venv`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FACTS_SCRIPT: &str = "tests/edge/deploy_facts.py";

/// Parsers for the deploy files. python-hcl2 and checkov cannot share a
/// virtualenv: checkov depends on bc-python-hcl2, a fork that installs the
/// same `hcl2` module with another API.
const PARSERS_VENV: (&str, &[&str]) = (
    "deploy-venv",
    &[
        "python-hcl2==8.1.4",
        "lark==1.3.1",
        "regex==2026.11.19",
        "PyYAML==6.0.3",
    ],
);
const CHECKOV_VENV: (&str, &[&str]) = ("checkov-venv", &["checkov==3.3.30"]);

// ---------------------------------------------------------------------------
// Processes and virtualenvs
// ---------------------------------------------------------------------------

/// Runs `cmd` to completion or kills it after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn must(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WSGATE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("neither HOME nor XDG_CACHE_HOME is set");
    base.join("wsgate")
}

/// An exclusive lock on a file, held until dropped, so that two tests (or two
/// test processes) do not build the same virtualenv at once. Each call opens
/// the file anew: flock then excludes threads of one process too.
struct FileLock(std::fs::File);

impl FileLock {
    fn take(path: &Path) -> FileLock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The python of virtualenv `name` holding exactly `packages`, made (or
/// remade when the pins change) on first use.
fn venv((name, packages): (&str, &[&str])) -> PathBuf {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("mkdir {}: {e}", cache.display()));
    let _lock = FileLock::take(&cache.join(format!("{name}.lock")));
    let dir = cache.join(name);
    let python = dir.join("bin/python");
    let marker = dir.join("wsgate-requirements.txt");
    let wanted = packages.join("\n") + "\n";
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.is_file() {
        return python;
    }
    eprintln!(
        "installing {} into {} (first use)",
        packages.join(" "),
        dir.display()
    );
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    must(
        "python3 -m venv (on Debian: apt-get install python3-venv)",
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&dir),
            Duration::from_secs(120),
        ),
    );
    must(
        "pip install",
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--timeout",
                    "60",
                ])
                .args(packages),
            Duration::from_secs(600),
        ),
    );
    std::fs::write(&marker, &wanted).expect("write the requirements marker");
    eprintln!(
        "installed {} in {:.1} s",
        packages.join(" "),
        started.elapsed().as_secs_f64()
    );
    python
}

// ---------------------------------------------------------------------------
// The binary's defaults, from `wsgate --help`
// ---------------------------------------------------------------------------

struct Defaults {
    /// `--flag` -> the text of its `[default: …]`.
    values: BTreeMap<String, String>,
    /// Every `WSGATE_*` variable the binary reads.
    env: Vec<String>,
}

impl Defaults {
    fn load() -> Defaults {
        let help = must(
            "wsgate --help",
            run(
                Command::new(env!("CARGO_BIN_EXE_wsgate")).arg("--help"),
                Duration::from_secs(10),
            ),
        );
        // Options start with `-`; the lines up to the next one describe it.
        let mut options: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let t = line.trim();
            if t.starts_with('-') {
                let flag = t
                    .split([' ', ','])
                    .find(|w| w.starts_with("--"))
                    .unwrap_or("")
                    .to_string();
                options.push((flag, String::new()));
            } else if let Some((_, text)) = options.last_mut() {
                text.push(' ');
                text.push_str(t);
            }
        }
        let bracket = |text: &str, key: &str| -> Option<String> {
            let start = text.rfind(&format!("[{key}: "))? + key.len() + 3;
            let end = start + text[start..].find(']')?;
            Some(text[start..end].to_string())
        };
        let mut values = BTreeMap::new();
        let mut env = Vec::new();
        for (flag, text) in &options {
            if let Some(d) = bracket(text, "default") {
                values.insert(flag.clone(), d);
            }
            if let Some(e) = bracket(text, "env") {
                env.push(e.trim_end_matches('=').to_string());
            }
        }
        assert!(
            values.len() > 10 && env.len() > 10,
            "could not read defaults from `wsgate --help`:\n{help}"
        );
        Defaults { values, env }
    }

    fn get(&self, flag: &str) -> &str {
        self.values
            .get(flag)
            .unwrap_or_else(|| panic!("`wsgate --help` shows no default for {flag}"))
    }

    fn secs(&self, flag: &str) -> f64 {
        duration_secs(self.get(flag))
    }

    fn port(&self, flag: &str) -> u16 {
        let v = self.get(flag);
        v.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{flag} default {v:?} has no port"))
    }
}

/// `30s`, `500ms`, `5m`, `1h`, `1d` or bare seconds (wsgate's syntax).
fn duration_secs(s: &str) -> f64 {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("bad duration {s:?}"));
    n * match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => panic!("bad duration unit in {s:?}"),
    }
}

fn num(what: &str, v: &str) -> f64 {
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what}: {v:?} is not a number"))
}

// ---------------------------------------------------------------------------
// Parsed deploy files as flat `path -> value` facts
// ---------------------------------------------------------------------------

struct Facts {
    what: String,
    map: BTreeMap<String, String>,
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

impl Facts {
    /// Runs `deploy_facts.py <args>` with the parsers' virtualenv.
    fn load(what: &str, args: &[&str]) -> Facts {
        let python = venv(PARSERS_VENV);
        let text = must(
            &format!("{FACTS_SCRIPT} {}", args.join(" ")),
            run(
                Command::new(python)
                    .arg(FACTS_SCRIPT)
                    .args(args)
                    .current_dir(ROOT),
                Duration::from_secs(120),
            ),
        );
        let map = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), unescape(v)))
            .collect();
        Facts {
            what: what.to_string(),
            map,
        }
    }

    fn opt(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    fn get(&self, key: &str) -> &str {
        self.opt(key).unwrap_or_else(|| {
            let parent = key.rsplit_once('.').map(|(p, _)| p).unwrap_or(key);
            let near: Vec<&String> = self
                .map
                .keys()
                .filter(|k| k.starts_with(parent))
                .take(20)
                .collect();
            panic!("{}: no `{key}`; nearby: {near:#?}", self.what)
        })
    }

    /// Keys directly under `prefix.` (one level; list indices in order).
    fn children(&self, prefix: &str) -> Vec<String> {
        let p = format!("{prefix}.");
        let mut out: Vec<String> = self
            .map
            .keys()
            .filter_map(|k| k.strip_prefix(&p))
            .map(|rest| rest.split('.').next().unwrap().to_string())
            .collect();
        // List indices in numeric order.
        out.sort_by_key(|k| (k.parse::<usize>().unwrap_or(usize::MAX), k.clone()));
        out.dedup();
        out
    }

    /// Every `(rest, value)` under `prefix.`, `rest` whole (map keys such
    /// as label names may contain dots themselves).
    fn entries(&self, prefix: &str) -> Vec<(String, String)> {
        let p = format!("{prefix}.");
        self.map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|rest| (rest.to_string(), v.clone())))
            .collect()
    }

    /// The value of a Terraform attribute with `${var.X}` / `${local.X}`
    /// references replaced by the variable's default or the local's value.
    fn tf(&self, key: &str) -> String {
        self.expand(self.get(key))
    }

    fn expand(&self, value: &str) -> String {
        let mut v = value.to_string();
        for _ in 0..10 {
            let Some(start) = v.find("${var.").or_else(|| v.find("${local.")) else {
                return v;
            };
            let end = start
                + v[start..]
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed reference in {v:?}"));
            let reference = &v[start + 2..end];
            let target = if let Some(var) = reference.strip_prefix("var.") {
                format!("variable.{var}.default")
            } else {
                format!("locals.{}", reference.strip_prefix("local.").unwrap())
            };
            let replacement = self.opt(&target).unwrap_or_else(|| {
                panic!(
                    "{}: `{reference}` in {value:?} must be a plain reference to a \
                     variable with a default or a local",
                    self.what
                )
            });
            v = format!("{}{}{}", &v[..start], replacement, &v[end + 1..]);
        }
        panic!("{}: references nest too deep in {value:?}", self.what)
    }

    /// Resources of `rtype` whose `attr` (expanded) equals `value`.
    fn resources_where(&self, rtype: &str, attr: &str, value: &str) -> Vec<String> {
        self.children(&format!("resource.{rtype}"))
            .into_iter()
            .filter(|name| {
                self.opt(&format!("resource.{rtype}.{name}.{attr}"))
                    .is_some_and(|v| self.expand(v) == value)
            })
            .collect()
    }

    /// The single resource of `rtype`.
    fn only(&self, rtype: &str) -> String {
        let names = self.children(&format!("resource.{rtype}"));
        assert_eq!(
            names.len(),
            1,
            "{}: expected one {rtype}, found {names:?}",
            self.what
        );
        format!("resource.{rtype}.{}", names[0])
    }
}

// ---------------------------------------------------------------------------
// Terraform
// ---------------------------------------------------------------------------

/// A WebSocket connection's ALB access log entry (fields as documented for
/// ALB access logs), plus a field the ALB might append one day.
const SAMPLE_ALB_LOG_LINE: &str =
    "wss 2026-01-15T10:00:05.123456Z app/wsgate-alb/50dc6c495c0c9188 \
192.0.2.10:51234 10.0.1.17:8080 0.001 0.002 0.000 101 101 312 1024 \
\"GET https://ws.example.com:443/ws HTTP/1.1\" \"Mozilla/5.0 (X11; Linux x86_64)\" \
TLS_AES_128_GCM_SHA256 TLSv1.3 \
arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/wsgate-tg/73e2d6bc24d8a067 \
\"Root=1-65a4f3a5-23a8c76965a2ef7629b185e3\" \"ws.example.com\" \
\"arn:aws:acm:eu-west-1:123456789012:certificate/0b9c1ab0\" 1 2026-01-15T09:58:01.100000Z \
\"forward\" \"-\" \"-\" \"10.0.1.17:8080\" \"101\" \"-\" \"-\" TID_1234567890abcdef future_field";

#[test]
fn terraform_agrees_with_the_binary() {
    let d = Defaults::load();
    let f = Facts::load("deploy/terraform", &["tf", "deploy/terraform"]);
    for file in ["main.tf", "variables.tf", "outputs.tf"] {
        assert!(
            f.opt(&format!("file.{file}")).is_some(),
            "deploy/terraform/{file} missing"
        );
    }

    // Every variable that mirrors a wsgate flag names the flag and defaults
    // to the binary's default.
    let mirrors: [(&str, &str, String); 9] = [
        ("target_port", "--listen", d.port("--listen").to_string()),
        ("ws_path", "--ws-path", d.get("--ws-path").to_string()),
        (
            "health_path",
            "--health-path",
            d.get("--health-path").to_string(),
        ),
        (
            "cookie_name",
            "--cookie-name",
            d.get("--cookie-name").to_string(),
        ),
        (
            "cookie_max_age_seconds",
            "--cookie-max-age",
            d.secs("--cookie-max-age").to_string(),
        ),
        (
            "session_ttl_seconds",
            "--session-ttl",
            d.secs("--session-ttl").to_string(),
        ),
        (
            "drain_timeout_seconds",
            "--drain-timeout",
            d.secs("--drain-timeout").to_string(),
        ),
        (
            "ping_interval_seconds",
            "--ping-interval",
            d.secs("--ping-interval").to_string(),
        ),
        (
            "pong_timeout_seconds",
            "--pong-timeout",
            d.secs("--pong-timeout").to_string(),
        ),
    ];
    for (var, flag, binary_default) in &mirrors {
        let desc = f.get(&format!("variable.{var}.description"));
        assert!(
            desc.contains(flag),
            "variable {var}: its description must name the flag {flag}: {desc:?}"
        );
        assert_eq!(
            f.get(&format!("variable.{var}.default")),
            binary_default,
            "variable {var} must default to the binary's {flag} default"
        );
    }
    let ping = d.secs("--ping-interval");
    let drain = d.secs("--drain-timeout");
    let cookie = d.get("--cookie-name");
    let health = d.get("--health-path");

    // The ALB: idle timeout above the heartbeat, access logs on.
    let lb = f.only("aws_lb");
    assert_eq!(f.tf(&format!("{lb}.load_balancer_type")), "application");
    let idle = num("idle_timeout", &f.tf(&format!("{lb}.idle_timeout")));
    assert!(
        idle > ping,
        "ALB idle_timeout {idle} s must exceed wsgate --ping-interval {ping} s"
    );
    assert_eq!(f.tf(&format!("{lb}.access_logs.0.enabled")), "true");
    assert!(f
        .get(&format!("{lb}.access_logs.0.bucket"))
        .contains("aws_s3_bucket."));

    // The HTTPS listener forwards to the target group.
    let listener = f.only("aws_lb_listener");
    assert_eq!(f.tf(&format!("{listener}.protocol")), "HTTPS");
    assert_eq!(f.tf(&format!("{listener}.port")), "443");
    assert_eq!(
        f.get(&format!("{listener}.certificate_arn")),
        "${var.certificate_arn}"
    );
    assert_eq!(
        f.tf(&format!("{listener}.default_action.0.type")),
        "forward"
    );

    // The target group: HTTP/1.1 on the traffic port, drain window, stickiness, health.
    let tg = f.only("aws_lb_target_group");
    assert_eq!(f.tf(&format!("{tg}.protocol")), "HTTP");
    assert_eq!(f.tf(&format!("{tg}.protocol_version")), "HTTP1");
    assert_eq!(f.tf(&format!("{tg}.port")), d.port("--listen").to_string());
    let dereg = num(
        "deregistration_delay",
        &f.tf(&format!("{tg}.deregistration_delay")),
    );
    assert!(
        dereg > drain,
        "deregistration_delay {dereg} s must exceed wsgate --drain-timeout {drain} s"
    );
    let st = format!("{tg}.stickiness.0");
    assert_eq!(f.tf(&format!("{st}.enabled")), "true");
    assert_eq!(f.tf(&format!("{st}.type")), "app_cookie");
    assert_eq!(
        f.tf(&format!("{st}.cookie_name")),
        cookie,
        "stickiness cookie_name must be the binary's --cookie-name"
    );
    let duration = num("cookie_duration", &f.tf(&format!("{st}.cookie_duration")));
    assert!(
        (1.0..=604800.0).contains(&duration),
        "cookie_duration {duration}"
    );
    let hc = format!("{tg}.health_check.0");
    assert_eq!(f.tf(&format!("{hc}.path")), health);
    assert_eq!(f.tf(&format!("{hc}.matcher")), "200");
    assert_eq!(f.tf(&format!("{hc}.protocol")), "HTTP");
    assert_ne!(f.tf(&format!("{hc}.path")), d.get("--ws-path"));

    // The alarms.
    let alarm = "aws_cloudwatch_metric_alarm";
    let t5xx = f.resources_where(alarm, "metric_name", "HTTPCode_Target_5XX_Count");
    assert_eq!(t5xx.len(), 1, "one alarm on HTTPCode_Target_5XX_Count");
    let a = format!("resource.{alarm}.{}", t5xx[0]);
    assert_eq!(f.tf(&format!("{a}.namespace")), "AWS/ApplicationELB");
    assert_eq!(
        f.tf(&format!("{a}.comparison_operator")),
        "GreaterThanThreshold"
    );
    assert_eq!(num("threshold", &f.tf(&format!("{a}.threshold"))), 0.0);
    let trt = f.resources_where(alarm, "metric_name", "TargetResponseTime");
    assert_eq!(trt.len(), 1, "one alarm on TargetResponseTime");
    let a = format!("resource.{alarm}.{}", trt[0]);
    assert_eq!(f.tf(&format!("{a}.namespace")), "AWS/ApplicationELB");
    assert!(num("threshold", &f.tf(&format!("{a}.threshold"))) > 0.0);

    // Athena: a table over the logs whose regex parses an ALB log line of a
    // WebSocket into its columns, and the saved reconnect query.
    let table = f.only("aws_glue_catalog_table");
    let sd = format!("{table}.storage_descriptor.0");
    assert_eq!(
        f.tf(&format!("{sd}.ser_de_info.0.serialization_library")),
        "org.apache.hadoop.hive.serde2.RegexSerDe"
    );
    let regex = f.tf(&format!("{sd}.ser_de_info.0.parameters.input.regex"));
    let columns_ref = f.get(&format!("{sd}.dynamic.0.columns.for_each"));
    let columns_local = columns_ref
        .strip_prefix("${local.")
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or_else(|| panic!("columns come from a local list, got {columns_ref:?}"));
    let columns: Vec<String> = f
        .children(&format!("locals.{columns_local}"))
        .iter()
        .map(|i| f.get(&format!("locals.{columns_local}.{i}.0")).to_string())
        .collect();
    assert!(columns.len() >= 30, "ALB log columns: {columns:?}");
    let dir = std::env::temp_dir().join(format!("wsgate-regex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let case = dir.join("case.txt");
    std::fs::write(&case, format!("{regex}\n{SAMPLE_ALB_LOG_LINE}\n")).unwrap();
    let groups = Facts::load("the Athena regex", &["regex", case.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        groups.opt("nomatch").is_none() && !groups.map.is_empty(),
        "the Athena table's input.regex does not match a WebSocket log line:\n{regex}"
    );
    let group_count = groups.children("group").len();
    assert_eq!(
        group_count,
        columns.len(),
        "regex groups vs table columns (RegexSerDe maps them in order)"
    );
    let column = |name: &str| -> &str {
        let i = columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        groups.get(&format!("group.{}", i + 1))
    };
    assert_eq!(column("type"), "wss");
    assert_eq!(column("client_ip"), "192.0.2.10");
    assert_eq!(column("target_ip"), "10.0.1.17");
    assert_eq!(column("elb_status_code"), "101");
    assert_eq!(column("request_url"), "https://ws.example.com:443/ws");
    assert_eq!(column("user_agent"), "Mozilla/5.0 (X11; Linux x86_64)");
    assert_eq!(
        column("request_creation_time"),
        "2026-01-15T09:58:01.100000Z"
    );
    assert_eq!(column("conn_trace_id"), "TID_1234567890abcdef");

    let queries = f.children("resource.aws_athena_named_query");
    let reconnect_query = queries
        .iter()
        .map(|q| f.tf(&format!("resource.aws_athena_named_query.{q}.query")))
        .find(|sql| sql.contains("lag(target_ip)"))
        .unwrap_or_else(|| {
            panic!("no aws_athena_named_query compares consecutive targets with lag(target_ip)")
        });
    for needle in [
        "PARTITION BY client_ip".to_string(),
        "ORDER BY started".to_string(),
        "elb_status_code = 101".to_string(),
        format!("url_extract_path(request_url) = '{}'", d.get("--ws-path")),
        format!("<= {}", d.secs("--session-ttl")),
        "target_ip = previous_target_ip".to_string(),
    ] {
        assert!(
            reconnect_query.contains(&needle),
            "the reconnect query lacks `{needle}`:\n{reconnect_query}"
        );
    }
    eprintln!(
        "terraform: idle_timeout {idle} s > ping {ping} s; deregistration_delay {dereg} s > drain {drain} s; \
         app_cookie {cookie}; health {health} 200; {} alarms; {} saved queries",
        f.children(&format!("resource.{alarm}")).len(),
        queries.len()
    );
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// `k=v,k=v` (ALB controller attribute annotations).
fn attributes(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn kubernetes_manifests_agree_with_the_binary() {
    let d = Defaults::load();
    let mut files: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("deploy/k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| p.strip_prefix(ROOT).unwrap().display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["yaml"];
    args.extend(files.iter().map(String::as_str));
    let f = Facts::load("deploy/k8s", &args);

    let deployment = "Deployment/wsgate";
    let pod = format!("{deployment}.spec.template.spec");
    let containers = f.children(&format!("{pod}.containers"));
    let c = containers
        .iter()
        .map(|i| format!("{pod}.containers.{i}"))
        .find(|c| f.opt(&format!("{c}.name")) == Some("wsgate"))
        .expect("a container named wsgate");

    // Environment: only variables the binary reads; the values that matter.
    let mut env = BTreeMap::new();
    for i in f.children(&format!("{c}.env")) {
        let name = f.get(&format!("{c}.env.{i}.name")).to_string();
        assert!(
            d.env.contains(&name),
            "{name} is not an environment variable wsgate reads ({:?})",
            d.env
        );
        if let Some(v) = f.opt(&format!("{c}.env.{i}.value")) {
            env.insert(name, v.to_string());
        }
    }
    let drain = env
        .get("WSGATE_DRAIN_TIMEOUT")
        .map(|v| duration_secs(v))
        .unwrap_or_else(|| d.secs("--drain-timeout"));
    let cookie = env
        .get("WSGATE_COOKIE_NAME")
        .cloned()
        .unwrap_or_else(|| d.get("--cookie-name").to_string());
    let health = env
        .get("WSGATE_HEALTH_PATH")
        .cloned()
        .unwrap_or_else(|| d.get("--health-path").to_string());
    let port_of = |var: &str, flag: &str| -> u16 {
        env.get(var)
            .and_then(|v| v.rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or_else(|| d.port(flag))
    };
    let traffic_port = port_of("WSGATE_LISTEN", "--listen");
    let admin_port = port_of("WSGATE_ADMIN_LISTEN", "--admin-listen");
    assert_eq!((traffic_port, admin_port), (8080, 9090));

    // Ports.
    let mut ports = BTreeMap::new();
    for i in f.children(&format!("{c}.ports")) {
        let p = format!("{c}.ports.{i}");
        ports.insert(
            f.opt(&format!("{p}.name")).unwrap_or("").to_string(),
            f.get(&format!("{p}.containerPort")).parse::<u16>().unwrap(),
        );
    }
    let mut numbers: Vec<u16> = ports.values().copied().collect();
    numbers.sort();
    assert_eq!(
        numbers,
        vec![traffic_port, admin_port],
        "container ports {ports:?}"
    );
    let resolve_port = |v: &str| -> u16 {
        v.parse()
            .ok()
            .or_else(|| ports.get(v).copied())
            .unwrap_or_else(|| panic!("unknown port {v:?}"))
    };

    // Probes: readiness on the health path; liveness anywhere but there.
    let ready = format!("{c}.readinessProbe.httpGet");
    assert_eq!(f.get(&format!("{ready}.path")), health, "readiness path");
    assert_eq!(resolve_port(f.get(&format!("{ready}.port"))), traffic_port);
    if let Some(p) = f.opt(&format!("{c}.livenessProbe.httpGet.path")) {
        assert_ne!(
            p, health,
            "a liveness probe on the health path would restart wsgate while it drains"
        );
    }

    // Termination: grace period > preStop + drain.
    let pre_stop = format!("{c}.lifecycle.preStop");
    let sleep = if let Some(s) = f.opt(&format!("{pre_stop}.sleep.seconds")) {
        num("preStop sleep", s)
    } else {
        let cmd: Vec<&str> = f
            .children(&format!("{pre_stop}.exec.command"))
            .iter()
            .map(|i| f.get(&format!("{pre_stop}.exec.command.{i}")))
            .collect();
        let joined = cmd.join(" ");
        let after = joined
            .split("sleep ")
            .nth(1)
            .unwrap_or_else(|| panic!("preStop must sleep, got {cmd:?}"));
        num("preStop sleep", after.split_whitespace().next().unwrap())
    };
    assert!(
        sleep > 0.0 && sleep <= 30.0,
        "preStop sleep {sleep} s: short, but there"
    );
    let grace = num(
        "terminationGracePeriodSeconds",
        f.get(&format!("{pod}.terminationGracePeriodSeconds")),
    );
    assert!(
        grace > drain + sleep,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep} s + drain {drain} s"
    );

    // Security: non-root, read-only root, no privilege escalation.
    let non_root =
        |scope: &str| f.opt(&format!("{scope}.securityContext.runAsNonRoot")) == Some("true");
    assert!(non_root(&pod) || non_root(&c), "runAsNonRoot");
    for scope in [&pod, &c] {
        if let Some(uid) = f.opt(&format!("{scope}.securityContext.runAsUser")) {
            assert_ne!(uid, "0", "runAsUser 0");
        }
    }
    assert_eq!(
        f.opt(&format!("{c}.securityContext.readOnlyRootFilesystem")),
        Some("true")
    );
    assert_eq!(
        f.opt(&format!("{c}.securityContext.allowPrivilegeEscalation")),
        Some("false")
    );
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            f.get(&format!("{c}.resources.{kind}.{res}"));
        }
    }

    // The Service reaches the traffic port of these pods.
    let svc_ports = f.children("Service/wsgate.spec.ports");
    assert!(svc_ports.iter().any(|i| resolve_port(
        f.get(&format!("Service/wsgate.spec.ports.{i}.targetPort"))
    ) == traffic_port));
    let selector = f.entries("Service/wsgate.spec.selector");
    assert!(!selector.is_empty(), "the Service selects pods");
    for (label, value) in selector {
        assert_eq!(
            f.opt(&format!(
                "{deployment}.spec.template.metadata.labels.{label}"
            )),
            Some(value.as_str()),
            "the Service selector {label} must match the pod labels"
        );
    }

    // The optional Ingress (AWS Load Balancer Controller): same contract as Terraform.
    let ann = "Ingress/wsgate.metadata.annotations";
    let key = |k: &str| format!("{ann}.alb.ingress.kubernetes.io/{k}");
    let tg = attributes(f.get(&key("target-group-attributes")));
    let lb = attributes(f.get(&key("load-balancer-attributes")));
    let tg_get = |k: &str| {
        tg.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("target-group-attributes lack {k}: {tg:?}"))
    };
    assert_eq!(tg_get("stickiness.enabled"), "true");
    assert_eq!(tg_get("stickiness.type"), "app_cookie");
    assert_eq!(tg_get("stickiness.app_cookie.cookie_name"), cookie);
    let dereg = num(
        "deregistration_delay",
        tg_get("deregistration_delay.timeout_seconds"),
    );
    assert!(
        dereg > drain + sleep,
        "Ingress deregistration_delay {dereg} s must exceed preStop {sleep} s + drain {drain} s"
    );
    let idle = num(
        "idle_timeout",
        lb.get("idle_timeout.timeout_seconds")
            .map(String::as_str)
            .unwrap_or("60"),
    );
    assert!(
        idle > d.secs("--ping-interval"),
        "ALB idle timeout {idle} s must exceed --ping-interval"
    );
    assert_eq!(f.get(&key("healthcheck-path")), health);
    assert_eq!(f.get(&key("success-codes")), "200");
    assert_eq!(f.get(&key("backend-protocol")), "HTTP");
    eprintln!(
        "k8s: grace {grace} s > preStop {sleep} s + drain {drain} s; readiness {health}; ports {ports:?}; \
         ingress app_cookie {cookie}, deregistration {dereg} s, idle {idle} s"
    );
}

// ---------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------

/// Instructions of a Dockerfile: continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// Top-level entries Cargo needs to build: the manifest, the lock file and
/// the first path component of every target it declares.
fn cargo_inputs() -> Vec<String> {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let mut inputs = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut flush = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let default_dir = match section {
            "[[bench]]" => Some("benches"),
            "[[test]]" => Some("tests"),
            "[[example]]" => Some("examples"),
            "[[bin]]" | "[lib]" => Some("src"),
            _ => None,
        };
        if let Some(dir) = default_dir {
            let p = path
                .take()
                .unwrap_or_else(|| format!("{dir}/{}.rs", name.take().unwrap_or_default()));
            let top = p.split('/').next().unwrap().to_string();
            if !inputs.contains(&top) {
                inputs.push(top);
            }
        }
        *name = None;
        *path = None;
    };
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&section, &mut name, &mut path);
            section = line.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "name" => name = Some(v),
                "path" => path = Some(v),
                _ => {}
            }
        }
    }
    flush(&section, &mut name, &mut path);
    if !inputs.iter().any(|i| i == "src") {
        inputs.push("src".into());
    }
    inputs
}

#[test]
fn dockerfile_follows_container_conventions() {
    let d = Defaults::load();
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let ins = dockerfile_instructions(&text);
    let stages: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage build expected");
    let last = &ins[*stages.last().unwrap()..];
    let build = &ins[stages[0]..stages[1]];

    // The runtime stage takes only the binary from the build stage.
    let build_name = ins[stages[0]]
        .1
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("as"))
        .map(|w| w[1].to_string())
        .expect("the build stage is named (FROM ... AS <name>)");
    assert!(
        last.iter()
            .any(|(op, a)| op == "COPY" && a.contains(&format!("--from={build_name}"))),
        "the runtime stage copies from the {build_name} stage"
    );
    assert!(
        !ins[*stages.last().unwrap()].1.contains("rust:"),
        "the runtime image must not be the Rust toolchain"
    );

    // The build stage copies everything Cargo needs, and .dockerignore lets it through.
    let copied: Vec<&str> = build
        .iter()
        .filter(|(op, _)| op == "COPY")
        .flat_map(|(_, a)| {
            let words: Vec<&str> = a
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .map(|s| s.trim_end_matches('/'))
        .collect();
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap_or_default();
    let ignore: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for input in cargo_inputs() {
        assert!(
            copied.contains(&input.as_str()) || copied.contains(&"."),
            "the build stage does not COPY {input} (Cargo.toml needs it); it copies {copied:?}"
        );
        let excluded = ignore.iter().rposition(|p| {
            let p = p.trim_end_matches('/');
            p == "*" || p == input
        });
        let reincluded = ignore.iter().rposition(|p| {
            p.strip_prefix('!').map(|p| p.trim_end_matches('/')) == Some(input.as_str())
        });
        assert!(
            excluded.is_none() || reincluded > excluded,
            ".dockerignore keeps {input} out of the build context"
        );
    }

    // Non-root user, exec-form entrypoint, both ports, a health check.
    let user = last
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, a)| a.split(':').next().unwrap().to_string())
        .expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "USER {user} is root");
    let entry = last
        .iter()
        .rev()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, a)| a.clone())
        .expect("ENTRYPOINT");
    assert!(
        entry.starts_with("[\"") && entry.ends_with("\"]"),
        "ENTRYPOINT must be exec form (JSON array) so SIGTERM reaches wsgate: {entry}"
    );
    assert!(entry.contains("wsgate"), "ENTRYPOINT runs wsgate: {entry}");
    let exposed: Vec<u16> = last
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|p| p.split('/').next().unwrap().parse().unwrap())
        })
        .collect();
    for port in [d.port("--listen"), d.port("--admin-listen")] {
        assert!(exposed.contains(&port), "EXPOSE {port} (got {exposed:?})");
    }
    let health = last
        .iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .map(|(_, a)| a.clone())
        .expect("HEALTHCHECK");
    assert!(
        health.contains(" CMD ") || health.starts_with("CMD "),
        "HEALTHCHECK CMD: {health}"
    );
    assert!(
        health.contains(d.get("--health-path")),
        "the HEALTHCHECK probes {}: {health}",
        d.get("--health-path")
    );
    if let Some((_, sig)) = last.iter().find(|(op, _)| op == "STOPSIGNAL") {
        assert_eq!(sig, "SIGTERM", "wsgate drains on SIGTERM");
    }
    eprintln!(
        "Dockerfile: {} stages, USER {user}, ENTRYPOINT {entry}, EXPOSE {exposed:?}, build copies {copied:?}",
        stages.len()
    );
}

// ---------------------------------------------------------------------------
// checkov
// ---------------------------------------------------------------------------

#[test]
fn checkov_reports_no_failed_checks() {
    let python = venv(CHECKOV_VENV);
    let checkov = python.with_file_name("checkov");
    // Two runs: given both a directory and a file, checkov 3.3 silently
    // skips the file.
    let runs: [(&[&str], &[&str]); 2] = [
        (&["-d", "deploy"], &["terraform", "kubernetes", "secrets"]),
        (&["-f", "Dockerfile"], &["dockerfile"]),
    ];
    let mut summaries = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    let dir = std::env::temp_dir().join(format!("wsgate-checkov-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (target, frameworks)) in runs.iter().enumerate() {
        let out = run(
            Command::new(&checkov)
                .args(*target)
                .arg("--framework")
                .args(*frameworks)
                // Offline: no guidelines or policies from the vendor's platform.
                .args(["--skip-download", "--output", "json"])
                .env("BC_SKIP_MAPPING", "TRUE")
                .current_dir(ROOT),
            Duration::from_secs(300),
        );
        // Exit 1 means failed checks: read the report either way.
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "checkov {target:?} crashed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let report = dir.join(format!("report-{i}.json"));
        std::fs::write(&report, &out.stdout).unwrap();
        let text = must(
            "summarizing the checkov report",
            run(
                Command::new(&python)
                    .arg(FACTS_SCRIPT)
                    .arg("checkov")
                    .arg(&report)
                    .current_dir(ROOT),
                Duration::from_secs(60),
            ),
        );
        for line in text.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols[0] {
                "summary" => {
                    summaries.push(cols[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>())
                }
                "failed" => failed.push(cols[1..].join("  ")),
                "skipped" => skipped.push((
                    cols[1].to_string(),
                    cols[2].to_string(),
                    cols.get(3).unwrap_or(&"").to_string(),
                )),
                _ => {}
            }
        }
        for fw in *frameworks {
            if *fw == "secrets" {
                continue; // no report when there is nothing to flag
            }
            let s = summaries.iter().find(|s| s[0] == *fw).unwrap_or_else(|| {
                panic!(
                    "checkov {target:?} produced no {fw} report:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert!(
                s[1].parse::<u32>().unwrap() > 0,
                "checkov ran no {fw} check"
            );
            assert_eq!(s[4], "0", "checkov could not parse some {fw} files");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for s in &summaries {
        eprintln!(
            "checkov {}: passed {}, failed {}, skipped {}",
            s[0], s[1], s[2], s[3]
        );
    }
    for (id, resource, reason) in &skipped {
        eprintln!("  skipped {id} on {resource}: {reason}");
        assert!(
            !reason.trim().is_empty(),
            "skip of {id} on {resource} gives no reason"
        );
    }
    assert!(
        failed.is_empty(),
        "checkov failed checks (fix them, or skip inline with a one-line reason):\n{}",
        failed.join("\n")
    );
}
