//! JSON lines to a file, rotated by size: `events.json` becomes
//! `events.json.1`, older files shift up, and only `keep` of them stay.
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::new(f), size))
}

impl RotatingFile {
    /// Appends to `path`; rotates when a line would take it past `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let (out, size) = open(path)?;
        Ok(Self {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            keep,
            out,
            size,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        (self.out, self.size) = open(&self.path)?;
        Ok(())
    }

    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("vardr-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.json");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..20 {
            f.write_line(&format!(
                "{{\"n\":{i:04},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}"
            ))
            .unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["events.json", "events.json.1", "events.json.2"]);
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(cur.len() <= 100 && cur.ends_with("\"}\n"), "{cur}");
        // One 53-byte line fits under 100 bytes: newest live, older ones shifted.
        assert!(cur.contains("\"n\":0019"), "{cur}");
        let one = std::fs::read_to_string(dir.join("events.json.1")).unwrap();
        assert!(one.contains("\"n\":0018"), "{one}");
        let two = std::fs::read_to_string(dir.join("events.json.2")).unwrap();
        assert!(two.contains("\"n\":0017"), "{two}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
