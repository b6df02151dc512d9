//! Real inputs that fuzzing starts from: mutating a valid Istio document or a
//! real compiled config reaches the deep code that random bytes never do.

use std::path::{Path, PathBuf};

/// How many generated inputs a target runs under `cargo test`: enough to
/// exercise every target in a few seconds; long runs use `cargo bolero`.
pub const TEST_ITERATIONS: usize = 2_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML file of the examples and the model's seed fixtures.
pub fn yaml_files() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["examples", "crates/model/tests/seeds"] {
        collect(&repo().join(dir), &mut out);
    }
    out.sort();
    out.into_iter()
        .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// A small edit of a byte string: the fuzzer's generated input describes
/// edits, so every input stays close to a real document.
#[derive(Clone, Debug, bolero::TypeGenerator)]
pub enum Edit {
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u8,
    },
    Replace {
        at: u16,
        bytes: Vec<u8>,
    },
    /// Copies a range elsewhere: duplicates keys, nests documents.
    Copy {
        from: u16,
        len: u8,
        to: u16,
    },
}

pub fn apply(edits: &[Edit], data: &mut Vec<u8>) {
    for e in edits {
        let pos = |at: u16, len: usize| if len == 0 { 0 } else { at as usize % (len + 1) };
        match e {
            Edit::Insert { at, bytes } => {
                let i = pos(*at, data.len());
                data.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove { at, len } => {
                let i = pos(*at, data.len());
                let end = (i + *len as usize).min(data.len());
                data.drain(i..end);
            }
            Edit::Replace { at, bytes } => {
                let i = pos(*at, data.len());
                let end = (i + bytes.len()).min(data.len());
                data.splice(i..end, bytes.iter().copied());
            }
            Edit::Copy { from, len, to } => {
                let i = pos(*from, data.len());
                let end = (i + *len as usize).min(data.len());
                let chunk: Vec<u8> = data[i..end].to_vec();
                let j = pos(*to, data.len());
                data.splice(j..j, chunk);
            }
        }
    }
}
