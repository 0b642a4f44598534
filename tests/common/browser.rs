//! Browser tests: run a script under `web/test/` with Node, which drives Debian's headless
//! Chromium through playwright-core. The script prints one JSON line of results on stdout and
//! exits non-zero (with `FAIL: why` on stderr) when what the viewer saw is wrong.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `web/` folder: package.json, the lockfile and the test scripts.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Runs `node web/test/<script> args...`, killing it after `limit`. Panics with the script's
/// output when it fails, times out, or the browser parts are not installed (the README's test
/// command installs them: chromium from Debian, the npm packages with `npm ci`).
pub fn run_script(script: &str, args: &[&str], limit: Duration) -> serde_json::Value {
    let web = web_dir();
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run `npm ci --prefix web` (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg(web.join("test").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait node") {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        None => {
            panic!("{script} did not finish within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
        Some(st) if !st.success() => {
            panic!("{script} failed ({st})\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
        Some(_) => {}
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match last.map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => panic!("{script} printed no JSON result\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
}
