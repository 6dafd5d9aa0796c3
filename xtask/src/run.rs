//! Running commands, streaming their output, and counting test results.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// `cargo` through rustup's proxy, so `+nightly` works as a first argument.
pub fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(crate::workspace_root());
    c
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Test counts over every tier, and the time each tier took.
#[derive(Default)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub tier_failures: u64,
    pub times: Vec<(String, f64, bool)>,
    /// Tests of the running test binary that said they skipped: libtest
    /// counts them as passed, so its summary line is corrected by these.
    pending_skips: u64,
    /// What went wrong, repeated at the very end of the run: a CI log is
    /// often read from its tail, and the failing test's lines may be
    /// thousands of lines above it.
    digest: Vec<String>,
    /// The line after a `panicked at` line is the panic message.
    after_panic: bool,
}

/// How many lines the failure digest keeps (a run where everything fails
/// must not print its whole log twice).
const DIGEST_LINES: usize = 60;

impl Tally {
    /// Counts one line of test output: libtest summaries and our SKIPPED
    /// lines. A test that skips prints one `SKIPPED <test>: <reason>` line
    /// and returns, which libtest reports as passed: the binary's summary
    /// (which follows its tests' output, with `--show-output`) is counted
    /// with those tests moved from passed to skipped.
    pub fn line(&mut self, line: &str) {
        let line = strip_ansi(line);
        self.note_failure(&line);
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            let mut passed = 0;
            for part in rest.split([';', '.']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(what)) = (w.next(), w.next()) {
                    if let Ok(n) = n.parse::<u64>() {
                        match what {
                            "passed" => passed += n,
                            "failed" => self.failed += n,
                            _ => {}
                        }
                    }
                }
            }
            let skips = std::mem::take(&mut self.pending_skips);
            if skips > passed {
                // A skip line outside a passing test: count it, never hide it.
                self.failed += skips - passed;
                let msg = format!("tally: {skips} SKIPPED lines but only {passed} passing tests");
                println!("{msg}");
                self.record(&msg);
            }
            self.passed += passed.saturating_sub(skips);
            self.skipped += skips.min(passed);
        } else if line.trim_start().starts_with("SKIPPED ") {
            self.pending_skips += 1;
        }
    }

    /// Keeps the lines that say which test failed and why.
    fn note_failure(&mut self, line: &str) {
        let t = line.trim();
        let keep = std::mem::take(&mut self.after_panic)
            || (t.contains("test ") && t.ends_with(" ... FAILED"))
            || t.contains("panicked at ");
        self.after_panic = t.contains("panicked at ");
        if keep {
            self.record(t);
        }
    }

    /// Adds a line to the digest printed at the end.
    pub fn record(&mut self, what: &str) {
        if self.digest.len() < DIGEST_LINES {
            let mut line: String = what.chars().take(400).collect();
            if line.len() < what.len() {
                line.push_str(" [...]");
            }
            self.digest.push(line);
        } else if self.digest.len() == DIGEST_LINES {
            self.digest.push("[more failures: see above]".into());
        }
    }

    pub fn finish(&self) -> Result<()> {
        let failed_tiers = self.times.iter().filter(|t| !t.2).count();
        if !self.digest.is_empty() {
            println!("\n==== what failed (details above) ====");
            for l in &self.digest {
                println!("  {l}");
            }
        }
        if self.pending_skips > 0 {
            println!(
                "tally: {} SKIPPED lines without a test summary (a test binary died?)",
                self.pending_skips
            );
        }
        println!(
            "\n{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        if self.failed > 0 || failed_tiers > 0 || self.tier_failures > 0 {
            bail!("test suite failed");
        }
        Ok(())
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a test command, echoing its output and counting results.
pub fn tests(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.line(&line);
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summaries_and_skips() {
        let mut t = Tally::default();
        t.line("test result: ok. 11 passed; 2 failed; 3 ignored; 0 measured; 0 filtered out");
        t.line("\x1b[32mtest result: ok\x1b[m. 4 passed; 0 failed; 0 ignored");
        assert_eq!((t.passed, t.failed, t.skipped), (15, 2, 0));
    }

    #[test]
    fn a_skipped_test_is_not_also_a_pass() {
        let mut t = Tally::default();
        t.line("SKIPPED foo: needs root");
        t.line("test foo ... ok");
        t.line("test bar ... ok");
        t.line("test result: ok. 2 passed; 0 failed; 0 ignored");
        // The next binary starts from zero pending skips.
        t.line("test result: ok. 3 passed; 0 failed; 0 ignored");
        assert_eq!((t.passed, t.failed, t.skipped), (4, 0, 1));
    }

    #[test]
    fn more_skips_than_passes_is_a_failure() {
        let mut t = Tally::default();
        t.line("SKIPPED a: x");
        t.line("SKIPPED b: y");
        t.line("test result: FAILED. 1 passed; 1 failed; 0 ignored");
        assert_eq!((t.passed, t.failed, t.skipped), (0, 2, 1));
    }

    #[test]
    fn failures_are_kept_for_the_end_of_the_log() {
        let mut t = Tally::default();
        t.line("test fine ... ok");
        t.line("  [6.12] test broken ... FAILED");
        t.line("  [6.12] thread 'broken' (12) panicked at vardr/tests/x.rs:3:5:");
        t.line("  [6.12] assertion `left == right` failed: open was allowed");
        t.line("  [6.12] stack backtrace:");
        assert_eq!(
            t.digest,
            [
                "[6.12] test broken ... FAILED",
                "[6.12] thread 'broken' (12) panicked at vardr/tests/x.rs:3:5:",
                "[6.12] assertion `left == right` failed: open was allowed",
            ]
        );
        for i in 0..2 * DIGEST_LINES {
            t.record(&format!("tier {i}"));
        }
        assert_eq!(t.digest.len(), DIGEST_LINES + 1);
    }
}
