//! A minimal reader of raw BTF: struct sizes, member offsets and the
//! shape of a function's parameters, nothing else. The agent needs ~60 offsets at start; a general BTF crate builds
//! every type of vmlinux (tens of MiB, seconds under emulation), this
//! reads them in place from the file's bytes with one index of the named
//! structs.
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_FUNC: u32 = 12;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_ENUM64: u32 = 19;

/// The shape of a parameter or return type, as far as an argument reader
/// cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeShape {
    Void,
    /// An integer or enum of this many bytes (`bool` is a 1-byte integer).
    Int(u32),
    /// A pointer to the named struct or union (`file`, `path`, ...).
    StructPtr(String),
    /// A pointer to a character type (`char *`).
    CharPtr,
    /// Anything else (another pointer, an array, a function pointer).
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("not BTF (bad magic or header)")]
    Header,
    #[error("BTF type {0} has an unknown kind {1}")]
    Kind(u32, u32),
    #[error("BTF truncated")]
    Truncated,
}

/// One BTF blob (vmlinux, or a module's split on top of vmlinux's).
pub struct Btf<'b> {
    data: Vec<u8>,
    /// Byte offset (in `data`) of each type, from `first_id` on.
    types: Vec<u32>,
    strings: std::ops::Range<usize>,
    first_id: u32,
    /// Strings of a split blob are numbered after its base's.
    str_base: u32,
    base: Option<&'b Btf<'b>>,
    /// Named structs with members (a forward declaration has none).
    structs: HashMap<Box<[u8]>, u32>,
}

/// A struct or union member: its name, type and offset in bits.
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, ReadError> {
    d.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(ReadError::Truncated)
}

impl<'b> Btf<'b> {
    /// Parses vmlinux's BTF (little-endian, as on every target we run).
    pub fn parse(data: Vec<u8>) -> Result<Btf<'static>, ReadError> {
        Btf::parse_on(data, None)
    }

    /// Parses a module's split BTF on top of `base`.
    pub fn parse_split(data: Vec<u8>, base: &'b Btf<'b>) -> Result<Self, ReadError> {
        Self::parse_on(data, Some(base))
    }

    fn parse_on(data: Vec<u8>, base: Option<&'b Btf<'b>>) -> Result<Self, ReadError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(ReadError::Header)?;
        if magic != MAGIC {
            return Err(ReadError::Header);
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let field = |i: usize| u32_at(&data, 8 + 4 * i).map(|v| v as usize);
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types_at = hdr_len + type_off;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if data.len() < types_at + type_len || data.len() < strings.end {
            return Err(ReadError::Truncated);
        }
        let first_id = base.map_or(1, |b| b.first_id + b.types.len() as u32);
        let str_base = base.map_or(0, |b| b.str_base + b.strings.len() as u32);
        let mut types = Vec::with_capacity(type_len / 16);
        let mut at = types_at;
        while at < types_at + type_len {
            types.push(at as u32);
            let info = u32_at(&data, at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                // INT, VAR, DECL_TAG: one word.
                1 | 14 | 17 => 4,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
                // FLOAT, TYPE_TAG: nothing.
                2 | 7..=12 | 16 | 18 => 0,
                // ARRAY
                3 => 12,
                // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per entry.
                4 | 5 | 15 | 19 => 12 * vlen,
                // ENUM, FUNC_PROTO: 8 bytes per entry.
                6 | 13 => 8 * vlen,
                k => return Err(ReadError::Kind(first_id + types.len() as u32 - 1, k)),
            };
            at += 12 + extra;
        }
        let mut btf = Self {
            data,
            types,
            strings,
            first_id,
            str_base,
            base,
            structs: HashMap::new(),
        };
        let mut structs = HashMap::new();
        for (i, &at) in btf.types.iter().enumerate() {
            let info = u32_at(&btf.data, at as usize + 4)?;
            if (info >> 24) & 0x1f == KIND_STRUCT && info & 0xffff != 0 {
                let name = btf.string(u32_at(&btf.data, at as usize)?);
                if !name.is_empty() {
                    // The first definition wins, as a name lookup finds it.
                    structs
                        .entry(name.into())
                        .or_insert(btf.first_id + i as u32);
                }
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    /// The NUL-terminated string at `off` of the string section(s).
    fn string(&self, off: u32) -> &[u8] {
        if off < self.str_base {
            return self.base.map_or(&[], |b| b.string(off));
        }
        let start = self.strings.start + (off - self.str_base) as usize;
        let s = self.data.get(start..self.strings.end).unwrap_or(&[]);
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// (blob, byte offset) of type `id`.
    fn locate(&self, id: u32) -> Option<(&Btf<'b>, usize)> {
        if id < self.first_id {
            return self.base.and_then(|b| b.locate(id));
        }
        let at = *self.types.get((id - self.first_id) as usize)?;
        Some((self, at as usize))
    }

    fn header(&self, id: u32) -> Option<(&Btf<'b>, usize, u32, u32)> {
        let (btf, at) = self.locate(id)?;
        let info = u32_at(&btf.data, at + 4).ok()?;
        Some((btf, at, info, u32_at(&btf.data, at + 8).ok()?))
    }

    /// The id of the struct named `name` that has members (this blob's
    /// first, then its base's).
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.structs
            .get(name.as_bytes())
            .copied()
            .or_else(|| self.base.and_then(|b| b.struct_id(name)))
    }

    /// The id of the function named `name` in this blob (a scan: asked
    /// once per function a program attaches to).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types.iter().enumerate().find_map(|(i, &at)| {
            let info = u32_at(&self.data, at as usize + 4).ok()?;
            let name_off = u32_at(&self.data, at as usize).ok()?;
            ((info >> 24) & 0x1f == KIND_FUNC && self.string(name_off) == name.as_bytes())
                .then_some(self.first_id + i as u32)
        })
    }

    /// The return type and parameters of function `name` (this blob's).
    pub fn func_signature(&self, name: &str) -> Option<(TypeShape, Vec<TypeShape>)> {
        let id = self.func_id(name)?;
        let (_, _, _, proto) = self.header(id)?;
        let (btf, at, info, ret) = self.header(proto)?;
        if (info >> 24) & 0x1f != KIND_FUNC_PROTO {
            return None;
        }
        let params = (0..(info & 0xffff) as usize)
            .map(|i| {
                let ty = u32_at(&btf.data, at + 12 + 8 * i + 4).unwrap_or(0);
                self.shape(ty)
            })
            .collect();
        Some((self.shape(ret), params))
    }

    /// `id` with typedefs and qualifiers peeled off.
    fn peel(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.header(id) {
                Some((_, _, info, next))
                    if matches!(
                        (info >> 24) & 0x1f,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = next
                }
                _ => break,
            }
        }
        id
    }

    fn shape(&self, id: u32) -> TypeShape {
        let id = self.peel(id);
        if id == 0 {
            return TypeShape::Void;
        }
        let Some((_, _, info, size_or_type)) = self.header(id) else {
            return TypeShape::Other;
        };
        match (info >> 24) & 0x1f {
            KIND_INT | KIND_ENUM | KIND_ENUM64 => TypeShape::Int(size_or_type),
            KIND_PTR => {
                let to = self.peel(size_or_type);
                match self.header(to) {
                    Some((b, a, i, _))
                        if matches!((i >> 24) & 0x1f, KIND_STRUCT | KIND_UNION | KIND_FWD) =>
                    {
                        let name = u32_at(&b.data, a).map(|n| b.string(n)).unwrap_or(&[]);
                        TypeShape::StructPtr(String::from_utf8_lossy(name).into_owned())
                    }
                    Some((b, a, i, size)) if (i >> 24) & 0x1f == KIND_INT && size == 1 => {
                        let name = u32_at(&b.data, a).map(|n| b.string(n)).unwrap_or(&[]);
                        if name.ends_with(b"char") {
                            TypeShape::CharPtr
                        } else {
                            TypeShape::Other
                        }
                    }
                    _ => TypeShape::Other,
                }
            }
            _ => TypeShape::Other,
        }
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u64> {
        let (_, _, _, size) = self.header(self.struct_id(name)?)?;
        Some(u64::from(size))
    }

    fn members(&self, id: u32) -> Vec<Member> {
        let Some((btf, at, info, _)) = self.header(id) else {
            return Vec::new();
        };
        let bitfields = info >> 31 == 1;
        (0..(info & 0xffff) as usize)
            .filter_map(|i| {
                let m = at + 12 + 12 * i;
                let offset = u32_at(&btf.data, m + 8).ok()?;
                Some(Member {
                    name_off: u32_at(&btf.data, m).ok()?,
                    type_id: u32_at(&btf.data, m + 4).ok()?,
                    bit_offset: if bitfields {
                        offset & 0xff_ffff
                    } else {
                        offset
                    },
                })
            })
            .collect()
    }

    /// `id` with typedefs and qualifiers peeled off, if a struct or union.
    fn aggregate(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, _, info, next) = self.header(id)?;
            match (info >> 24) & 0x1f {
                KIND_STRUCT | KIND_UNION => return Some(id),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = next
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of member `wanted` in struct or union `id`, looking
    /// through anonymous structs and unions.
    fn member_bits(&self, id: u32, wanted: &[u8]) -> Option<u32> {
        let members = self.members(id);
        for m in &members {
            let name = self.string(m.name_off);
            if name == wanted {
                return Some(m.bit_offset);
            }
            if name.is_empty() {
                if let Some(inner) = self
                    .aggregate(m.type_id)
                    .and_then(|a| self.member_bits(a, wanted))
                {
                    return Some(m.bit_offset + inner);
                }
            }
        }
        None
    }

    /// Byte offset of `member` in struct `name`.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u64> {
        let bits = self.member_bits(self.struct_id(name)?, member.as_bytes())?;
        Some(u64::from(bits) / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob builder: header, types, strings.
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn str(&mut self, s: &str) -> u32 {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        fn ty(&mut self, name: u32, kind: u32, vlen: u32, kflag: bool, size_or_type: u32) {
            self.word(name);
            self.word((u32::from(kflag) << 31) | (kind << 24) | vlen);
            self.word(size_or_type);
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// int (1); struct inner {int a; int b;} (2); struct outer { int x;
    /// union { int y; struct inner z; }; const-typedef'd anonymous
    /// struct with w } (3, 4, 5-7); a forward declaration of outer (8);
    /// a function `inner` (9).
    fn sample() -> Vec<u8> {
        let mut b = Blob::new();
        let (int, inner, outer) = (b.str("int"), b.str("inner"), b.str("outer"));
        let (a, bb, x, y, z, w, t) = (
            b.str("a"),
            b.str("b"),
            b.str("x"),
            b.str("y"),
            b.str("z"),
            b.str("w"),
            b.str("t"),
        );
        b.ty(int, 1, 0, false, 4);
        b.word(32); // INT encoding
        b.ty(inner, KIND_STRUCT, 2, false, 8); // 2
        for (n, off) in [(a, 0), (bb, 32)] {
            b.word(n);
            b.word(1);
            b.word(off);
        }
        b.ty(outer, KIND_STRUCT, 3, true, 24); // 3: bitfield-style offsets
        for (n, ty, off) in [(x, 1, 8 << 24), (0, 4, 64), (0, 6, 128)] {
            b.word(n);
            b.word(ty);
            b.word(off);
        }
        b.ty(0, KIND_UNION, 2, false, 8); // 4
        for (n, ty) in [(y, 1), (z, 2)] {
            b.word(n);
            b.word(ty);
            b.word(0);
        }
        b.ty(0, KIND_STRUCT, 1, false, 4); // 5
        b.word(w);
        b.word(1);
        b.word(32);
        b.ty(t, KIND_TYPEDEF, 0, false, 5); // 6 -> 5 (typedef)
        b.ty(0, KIND_CONST, 0, false, 6); // 7: const t (unused)
        b.ty(outer, 7, 0, false, 0); // 8: forward declaration
        b.ty(inner, KIND_FUNC, 0, false, 0); // 9: a function named like a struct
        b.bytes()
    }

    #[test]
    fn offsets_through_anonymous_members_and_qualifiers() {
        let btf = Btf::parse(sample()).expect("parse");
        assert_eq!(btf.struct_size("outer"), Some(24));
        assert_eq!(btf.member_offset("outer", "x"), Some(0));
        assert_eq!(btf.member_offset("outer", "y"), Some(8));
        assert_eq!(btf.member_offset("outer", "z"), Some(8));
        assert_eq!(btf.member_offset("outer", "w"), Some(16 + 4));
        assert_eq!(btf.member_offset("inner", "b"), Some(4));
        // A member of a named member is not the struct's own.
        assert_eq!(btf.member_offset("outer", "a"), None);
        assert_eq!(btf.member_offset("nope", "x"), None);
    }

    #[test]
    fn functions_are_found_by_name_and_kind() {
        let btf = Btf::parse(sample()).expect("parse");
        assert_eq!(btf.func_id("inner"), Some(9));
        assert_eq!(btf.struct_id("inner"), Some(2));
        assert_eq!(btf.func_id("outer"), None);
    }

    #[test]
    fn split_blobs_number_after_their_base() {
        let base = Btf::parse(sample()).expect("base");
        let mut m = Blob::new();
        let (name, v, inner_ref) = (m.str("mod_s"), m.str("v"), m.str("r"));
        // 10: struct mod_s { int v; struct inner r; } (types of the base).
        m.ty(
            base.str_base + base.strings.len() as u32 + name,
            KIND_STRUCT,
            2,
            false,
            12,
        );
        let off = base.strings.len() as u32;
        for (n, ty, o) in [(v, 1, 0), (inner_ref, 2, 32)] {
            m.word(off + n);
            m.word(ty);
            m.word(o);
        }
        // Split blobs start their strings after the base's.
        let split = Btf::parse_split(m.bytes(), &base).expect("split");
        assert_eq!(split.struct_id("mod_s"), Some(10));
        assert_eq!(split.member_offset("mod_s", "r"), Some(4));
        assert_eq!(split.member_offset("inner", "b"), Some(4));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Btf::parse(vec![1, 2, 3]).err(), Some(ReadError::Header));
        let mut cut = sample();
        cut.truncate(40);
        assert_eq!(Btf::parse(cut).err(), Some(ReadError::Truncated));
    }

    #[test]
    fn a_function_signature_names_struct_pointers_and_integer_sizes() {
        let mut b = Blob::new();
        let int = b.str("int");
        b.ty(int, KIND_INT, 0, false, 4); // 1
        b.word(32);
        let file = b.str("file");
        b.ty(file, KIND_STRUCT, 0, false, 8); // 2
        b.ty(0, KIND_PTR, 0, false, 2); // 3
        b.ty(0, KIND_CONST, 0, false, 3); // 4: const struct file *
        let ch = b.str("char");
        b.ty(ch, KIND_INT, 0, false, 1); // 5
        b.word(8);
        b.ty(0, KIND_PTR, 0, false, 5); // 6
        b.ty(0, KIND_FUNC_PROTO, 3, false, 1); // 7: int (file *, int, char *)
        for t in [4, 1, 6] {
            b.word(0);
            b.word(t);
        }
        let f = b.str("bpf_lsm_file_open");
        b.ty(f, KIND_FUNC, 0, false, 7); // 8
        b.ty(0, KIND_FUNC_PROTO, 0, false, 0); // 9: void (void)
        let g = b.str("bpf_lsm_void");
        b.ty(g, KIND_FUNC, 0, false, 9); // 10
        let btf = Btf::parse(b.bytes()).expect("parses");
        let (ret, params) = btf.func_signature("bpf_lsm_file_open").expect("found");
        assert_eq!(ret, TypeShape::Int(4));
        assert_eq!(
            params,
            [
                TypeShape::StructPtr("file".into()),
                TypeShape::Int(4),
                TypeShape::CharPtr
            ]
        );
        let (ret, params) = btf.func_signature("bpf_lsm_void").expect("found");
        assert_eq!((ret, params.len()), (TypeShape::Void, 0));
        assert!(btf.func_signature("bpf_lsm_missing").is_none());
    }
}
