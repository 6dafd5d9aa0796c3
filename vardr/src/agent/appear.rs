//! Binaries a policy names that were not installed when it was loaded.
//! They are matched by path meanwhile; when one appears, the agent reloads
//! its policy (as SIGHUP does) so the kernel also matches it by identity
//! (hard links, renames, other mount namespaces).
use std::path::Path;

#[derive(Debug, Default)]
pub struct Awaited {
    paths: Vec<String>,
}

impl Awaited {
    pub fn new(paths: Vec<String>) -> Self {
        Self { paths }
    }

    /// The awaited binaries that exist now, no longer awaited: a reload
    /// that fails does not make the agent retry for them.
    pub fn appeared(&mut self) -> Vec<String> {
        let (now, still): (Vec<String>, Vec<String>) = std::mem::take(&mut self.paths)
            .into_iter()
            .partition(|p| Path::new(p).exists());
        self.paths = still;
        now
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_binary_once_when_it_appears() {
        let dir = std::env::temp_dir().join(format!("vardr-appear-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nc = dir.join("nc").to_string_lossy().into_owned();
        let ncat = dir.join("ncat").to_string_lossy().into_owned();
        let mut a = Awaited::new(vec![nc.clone(), ncat.clone()]);
        assert!(a.appeared().is_empty());
        std::fs::write(&nc, b"").unwrap();
        assert_eq!(a.appeared(), [nc]);
        assert!(a.appeared().is_empty(), "reported once");
        assert!(!a.is_empty(), "ncat still awaited");
        std::fs::write(&ncat, b"").unwrap();
        assert_eq!(a.appeared(), [ncat]);
        assert!(a.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
