//! Cache keys: a versioned, machine-independent encoding of everything that
//! can reach a step's layer or config. Inputs are written field by field with
//! their lengths, never through a language's debug formatting, so the same
//! inputs give the same key on every machine and compiler, and no two
//! different inputs share an encoding. ARCHITECTURE.md has the table of what
//! each op puts in.

use sha2::{Digest as _, Sha256};

use crate::store::CacheKey;

/// Bumped whenever the encoding or what goes into a key changes, so old
/// entries simply stop matching.
/// v2: SOURCE_DATE_EPOCH enters the chain (v1 entries of epoch builds were keyed without it).
const VERSION: &[u8] = b"strata-cache-key-v2\n";

/// The inputs of one step's key, as `name len:bytes` records.
#[derive(Default)]
pub struct KeyInputs(Vec<u8>);

impl KeyInputs {
    pub fn new() -> KeyInputs {
        KeyInputs::default()
    }

    /// Appends one named field.
    pub fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut KeyInputs {
        let value = value.as_ref();
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(format!(" {}:", value.len()).as_bytes());
        self.0.extend_from_slice(value);
        self.0.push(b'\n');
        self
    }

    /// Appends a list field: its length, then each item as a field.
    pub fn list<S: AsRef<[u8]>>(&mut self, name: &str, items: &[S]) -> &mut KeyInputs {
        self.field(name, items.len().to_string());
        for item in items {
            self.field("-", item);
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The key a chain starts from: sha256(seed) (`FROM scratch`; empty below an image's `FROM` step).
pub fn root_key(seed: &[u8]) -> CacheKey {
    CacheKey::from_sha256(Sha256::digest(seed).into())
}

/// key(step) = sha256(version ‖ key(parent) ‖ canonical text ‖ inputs).
pub fn chain_key(parent: &CacheKey, text: &str, inputs: &[u8]) -> CacheKey {
    let mut hasher = Sha256::new();
    hasher.update(VERSION);
    for part in [parent.as_str().as_bytes(), text.as_bytes(), inputs] {
        hasher.update(format!("{}:", part.len()).as_bytes());
        hasher.update(part);
    }
    CacheKey::from_sha256(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_run_into_each_other() {
        let a = KeyInputs::new().field("env", "A=1\nB").field("cwd", "/").as_bytes().to_vec();
        let b = KeyInputs::new().field("env", "A=1").field("B\ncwd", "/").as_bytes().to_vec();
        assert_ne!(a, b);
        let parent = root_key(b"");
        assert_ne!(chain_key(&parent, "RUN a", b"b"), chain_key(&parent, "RUN ab", b""));
    }

    /// Keys are shared between machines and stores: a change here must be deliberate (bump VERSION).
    #[test]
    fn known_keys_stay_the_same() {
        let parent = root_key(b"FROM scratch");
        let inputs = KeyInputs::new().field("cwd", "/src").list("env", &["PATH=/bin"]).as_bytes().to_vec();
        assert_eq!(
            chain_key(&parent, "RUN make", &inputs).as_str(),
            "sha256:32a2a144e6debc6121007993676b701f4a99670b3f961cbf66971f8cd7937725"
        );
    }
}
