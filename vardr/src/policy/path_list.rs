//! A rule's list of paths, in one buffer.
//!
//! A policy can name 100 000 paths per rule. As `String`s each costs a
//! heap block (its bytes rounded up, plus the allocator's header) and a
//! 24-byte handle: 3 times its bytes for typical paths. Here the bytes sit
//! end to end with one offset each; the file's positions are kept only for
//! the entries that are wrong (the errors name them).
use std::fmt;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

use super::schema::At;

/// Paths end to end, each followed by a NUL (so the buffer is also their
/// exact keys: the compile adopts it); `ends[i]` is where path `i` and its
/// NUL end.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PathList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl PathList {
    /// Adds `p` (a path with a NUL in it cannot be a rule's: validation
    /// refuses it first).
    pub fn push(&mut self, p: &str) {
        self.bytes.extend_from_slice(p.as_bytes());
        self.bytes.push(0);
        // Policies are far below 4 GiB of paths; a bigger one is cut short
        // by the rule limits first.
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter { list: self, i: 0 }
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        // Pushed as `&str`: valid UTF-8 up to the NUL.
        std::str::from_utf8(self.bytes.get(start..end.checked_sub(1)?)?).ok()
    }

    /// The buffer of NUL-terminated paths and where each ends.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.bytes, self.ends)
    }

    pub fn contains(&self, p: &str) -> bool {
        self.iter().any(|q| q == p)
    }

    /// Gives back the memory of a list filled without a known length.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

#[derive(Clone)]
pub struct Iter<'a> {
    list: &'a PathList,
    i: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let p = self.list.get(self.i)?;
        self.i += 1;
        Some(p)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.list.len() - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a PathList {
    type Item = &'a str;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<S: AsRef<str>> FromIterator<S> for PathList {
    fn from_iter<I: IntoIterator<Item = S>>(it: I) -> Self {
        let mut l = Self::default();
        for p in it {
            l.push(p.as_ref());
        }
        l
    }
}

impl fmt::Debug for PathList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const N: usize> PartialEq<[&str; N]> for PathList {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.iter().zip(other).all(|(a, b)| a == *b)
    }
}

/// A list as read from a policy file: the paths that are well formed, and
/// the others with their positions (validation reports them).
#[derive(Debug, Default)]
pub struct PathListDoc {
    pub paths: PathList,
    pub bad: Vec<At<String>>,
}

impl PathListDoc {
    /// Whether the file named any path at all.
    pub fn named(&self) -> bool {
        !self.paths.is_empty() || !self.bad.is_empty()
    }
}

impl<'de> Deserialize<'de> for PathListDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PathListDoc;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of paths")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathListDoc, A::Error> {
                let mut out = PathListDoc::default();
                // Each string is freed as soon as its bytes are copied: the
                // next one reuses its block.
                while let Some(p) = seq.next_element::<At<String>>()? {
                    if super::validate::path_problem(&p.value, "path").is_some() {
                        out.bad.push(p);
                    } else {
                        out.paths.push(&p.value);
                    }
                }
                out.paths.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_back_as_pushed() {
        let l: PathList = ["/a", "", "/b/c"].into_iter().collect();
        assert_eq!(l.len(), 3);
        assert_eq!(l, ["/a", "", "/b/c"]);
        assert_eq!(l.get(1), Some(""));
        assert_eq!(l.get(3), None);
        assert!(l.contains("/b/c") && !l.contains("/b"));
        assert_eq!(format!("{l:?}"), r#"["/a", "", "/b/c"]"#);
        assert_eq!(l.iter().len(), 3);
    }
}
