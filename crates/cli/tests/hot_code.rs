//! The hot-code linker scripts (`crates/cli/<binary>-hot.ld`, written by
//! `bench/link-order.sh` from a profile, passed to every optimised link of
//! trellis-proxy and trellisd by `build.rs`) against the binaries this build
//! linked: each script took effect, and its names still name the binary's
//! functions. Stale names cost nothing at link time (they match nothing), so
//! this is where a list that has drifted from the code shows. An
//! unoptimised build is linked without the scripts; its functions, never
//! inlined, are the optimised builds' and more, so the names are checked
//! against it too.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Below this share of a list's lasting names (without a hash) naming a
/// function of the binary, the list is stale: `bench/link-order.sh` makes
/// a fresh one.
const FRESH_PERCENT: usize = 90;

#[test]
fn the_proxys_hot_code_list_names_its_functions_and_optimised_builds_place_them_together() {
    check_hot_code(
        "trellis-proxy",
        env!("CARGO_BIN_EXE_trellis-proxy"),
        include_str!("../trellis-proxy-hot.ld"),
    );
}

#[test]
fn trellisds_hot_code_list_names_its_functions_and_optimised_builds_place_them_together() {
    check_hot_code(
        "trellisd",
        env!("CARGO_BIN_EXE_trellisd"),
        include_str!("../trellisd-hot.ld"),
    );
}

/// `script`'s names name `binary`'s functions, and (optimised) they lie in
/// its `.text.hot`.
fn check_hot_code(name: &str, binary: &str, script: &str) {
    let binary = std::fs::read(binary).unwrap_or_else(|e| panic!("read {name}: {e}"));
    let elf = Elf::new(&binary);
    let patterns = patterns(script);
    // Names with their hash are the profiled builds' instances of generic
    // functions: another profile or version has other hashes, so they are
    // not counted here.
    let lasting: Vec<&Pattern> = patterns.iter().filter(|p| !p.has_hash()).collect();
    assert!(
        lasting.len() >= 1000,
        "{name}'s hot-code list holds {} names without a hash, not a profile's: run \
         bench/link-order.sh --bin {name}",
        lasting.len()
    );

    let mut functions = elf.functions();
    functions.sort_unstable();
    let matching = |pattern: &Pattern| -> &[(&str, u64)] {
        let (text, prefix) = match pattern {
            Pattern::Exact(name) => (*name, false),
            Pattern::Prefix(prefix) => (*prefix, true),
        };
        let start = functions.partition_point(|(name, _)| *name < text);
        let len = functions[start..]
            .iter()
            .take_while(|(name, _)| {
                if prefix {
                    name.starts_with(text)
                } else {
                    *name == text
                }
            })
            .count();
        &functions[start..start + len]
    };
    let stale: Vec<&&Pattern> = lasting.iter().filter(|p| matching(p).is_empty()).collect();
    let fresh = lasting.len() - stale.len();
    assert!(
        fresh * 100 >= lasting.len() * FRESH_PERCENT,
        "only {fresh} of {name}'s hot-code list's {} names without a hash name a function \
         of it (at least {FRESH_PERCENT} % should): the code moved on, run \
         bench/link-order.sh --bin {name}; the first stale ones: {:?}",
        lasting.len(),
        &stale[..stale.len().min(10)]
    );

    // Unoptimised builds are linked without the script (build.rs).
    if cfg!(debug_assertions) {
        return;
    }
    // A matched symbol outside the section is an alias LLVM made for an
    // identical function (merged functions share one body), so most, not
    // all, are inside.
    let hot = elf.section(".text.hot").unwrap_or_else(|| {
        panic!("{name} has no .text.hot section: build.rs did not pass the linker script")
    });
    let matched: Vec<u64> = patterns
        .iter()
        .flat_map(|p| matching(p).iter().map(|(_, address)| *address))
        .collect();
    let inside = matched.iter().filter(|a| hot.contains(*a)).count();
    assert!(
        inside * 100 >= matched.len() * 95,
        "only {inside} of the {} functions {name}'s list names lie in .text.hot {hot:x?}",
        matched.len()
    );
}

/// The list's hashed names (the instances of generic functions a profile
/// ran) match only a build whose crates have the profiled build's `-C
/// metadata`. Cargo's metadata for a crate hashes its features and its
/// dependencies' metadata, not the checkout's path; but a dependency's
/// features are those of the packages a build selects, so `cargo build -p
/// cli` and `cargo build --workspace` made different hashes for all of
/// trellis-proxy's crates (a dependency of one member only, a member
/// asking for a feature only it uses). The workspace's manifests are kept
/// so that they do not differ: checked here with `cargo tree`.
#[test]
fn trellis_proxys_crates_have_the_same_features_whichever_packages_a_build_selects() {
    let features = |selection: &[&str]| -> std::collections::BTreeSet<String> {
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["tree", "--locked", "-e", "normal", "--prefix", "none"])
            .args(["-f", "{p} [{f}]"])
            .args(selection)
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree {selection:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("cargo tree's output is UTF-8")
            .lines()
            .map(|line| line.trim_end_matches(" (*)").to_string())
            .filter(|line| !line.is_empty())
            .collect()
    };
    let alone = features(&["-p", "cli"]);
    let whole = features(&["--workspace"]);
    let differ: Vec<&String> = alone.difference(&whole).collect();
    assert!(
        differ.is_empty(),
        "these packages of trellis-proxy's build get other features in `cargo build \
         --workspace` (what they get there is listed by `cargo tree --workspace -e \
         normal,features -i NAME`): give the dependency those features in the \
         workspace's Cargo.toml, or make the member's dependency a dev-dependency: {differ:#?}"
    );
}

#[derive(Debug)]
enum Pattern<'a> {
    /// Every function whose name starts so: a legacy name without its hash
    /// (`..17h`) or with it (`..17h<16 hex digits>E`), or another name,
    /// with whatever LLVM appended to it (`.llvm.<n>`).
    Prefix(&'a str),
    Exact(&'a str),
}

impl Pattern<'_> {
    fn has_hash(&self) -> bool {
        let Pattern::Prefix(p) = self else {
            return false;
        };
        let Some(hash) = p
            .strip_suffix('E')
            .and_then(|p| p.get(p.len().saturating_sub(19)..))
        else {
            return false;
        };
        hash.len() == 19
            && hash.starts_with("17h")
            && hash[3..].bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// The list's input-section patterns, `.text.<name>` one a line.
fn patterns(script: &str) -> Vec<Pattern<'_>> {
    script
        .lines()
        .filter_map(|line| line.trim().strip_prefix(".text."))
        .filter(|name| !name.contains(' ')) // the output section's own line
        .map(|name| match name.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix),
            None => Pattern::Exact(name),
        })
        .collect()
}

/// Just enough of a little-endian ELF64 file: its sections and the
/// function symbols of its symbol table.
struct Elf<'a> {
    bytes: &'a [u8],
}

struct Section {
    name: u32,
    kind: u32,
    address: u64,
    offset: usize,
    size: usize,
    link: usize,
}

impl<'a> Elf<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        assert_eq!(
            &bytes[..6],
            b"\x7fELF\x02\x01",
            "not a little-endian ELF64 file"
        );
        Elf { bytes }
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes[at..at + 2].try_into().unwrap())
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    fn sections(&self) -> Vec<Section> {
        let (table, size, count) = (
            self.u64(0x28) as usize,
            self.u16(0x3a) as usize,
            self.u16(0x3c),
        );
        (0..count as usize)
            .map(|i| table + i * size)
            .map(|at| Section {
                name: self.u32(at),
                kind: self.u32(at + 4),
                address: self.u64(at + 16),
                offset: self.u64(at + 24) as usize,
                size: self.u64(at + 32) as usize,
                link: self.u32(at + 40) as usize,
            })
            .collect()
    }

    /// The NUL-terminated string at `at` of the string table `table`.
    fn string(&self, table: &Section, at: u32) -> &'a str {
        let bytes = &self.bytes[table.offset + at as usize..table.offset + table.size];
        let end = bytes.iter().position(|b| *b == 0).unwrap();
        std::str::from_utf8(&bytes[..end]).unwrap()
    }

    /// The address range of the section named `name`.
    fn section(&self, name: &str) -> Option<std::ops::Range<u64>> {
        let sections = self.sections();
        let names = &sections[self.u16(0x3e) as usize];
        sections
            .iter()
            .find(|s| self.string(names, s.name) == name)
            .map(|s| s.address..s.address + s.size as u64)
    }

    /// Every function symbol (name, address) of the symbol table.
    fn functions(&self) -> Vec<(&'a str, u64)> {
        const SYMTAB: u32 = 2;
        const FUNC: u8 = 2;
        let sections = self.sections();
        let symtab = sections
            .iter()
            .find(|s| s.kind == SYMTAB)
            .expect("trellis-proxy has no symbol table (stripped?)");
        let names = &sections[symtab.link];
        (symtab.offset..symtab.offset + symtab.size)
            .step_by(24)
            .filter(|at| self.bytes[at + 4] & 0xf == FUNC)
            .map(|at| (self.string(names, self.u32(at)), self.u64(at + 8)))
            .collect()
    }
}
