//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`) and a writer that hashes as it goes.

use std::fmt;
use std::io::{self, Read};

use anyhow::{Result, bail};
use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    pub algo: Algo,
    pub hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((algo, hex)) = s.split_once(':') else { bail!("invalid digest {s:?}: expected sha256:<hex>") };
        let (algo, len) = match algo {
            "sha256" => (Algo::Sha256, 64),
            "sha512" => (Algo::Sha512, 128),
            other => bail!("unsupported digest algorithm {other:?} in {s:?}"),
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("invalid digest {s:?}: expected {len} lowercase hex digits");
        }
        Ok(Digest { algo, hex: hex.to_string() })
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest { algo: Algo::Sha256, hex: hex(&Sha256::digest(data)) }
    }

    /// The first 12 hex digits, as `docker images` shows ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl TryFrom<String> for Digest {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Digest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// A running hash of either algorithm.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest { algo: Algo::Sha256, hex: hex(&h.finalize()) },
            Hasher::Sha512(h) => Digest { algo: Algo::Sha512, hex: hex(&h.finalize()) },
        }
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    pub inner: R,
    pub hasher: Hasher,
    pub count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, algo: Algo) -> Self {
        HashReader { inner, hasher: Hasher::new(algo), count: 0 }
    }
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Digest::parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855").is_err());
        let mut r = HashReader::new(&b"abc"[..], Algo::Sha512);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(r.finish().0.hex.len(), 128);
    }
}
