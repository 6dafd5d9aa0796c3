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
}

impl Tally {
    /// Counts one line of test output: libtest summaries and our SKIPPED lines.
    pub fn line(&mut self, line: &str) {
        let line = strip_ansi(line);
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            for part in rest.split([';', '.']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(what)) = (w.next(), w.next()) {
                    if let Ok(n) = n.parse::<u64>() {
                        match what {
                            "passed" => self.passed += n,
                            "failed" => self.failed += n,
                            _ => {}
                        }
                    }
                }
            }
        } else if line.trim_start().starts_with("SKIPPED ") {
            self.skipped += 1;
        }
    }

    pub fn finish(&self) -> Result<()> {
        let failed_tiers = self.times.iter().filter(|t| !t.2).count();
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
        t.line("SKIPPED foo: needs root");
        t.line("test foo ... ok");
        assert_eq!((t.passed, t.failed, t.skipped), (15, 2, 1));
    }
}
