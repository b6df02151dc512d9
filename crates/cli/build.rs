//! Link options for the sidecar binary, which runs once per pod: its resident
//! memory is mostly the executable's pages, so they are kept few.
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trellis-proxy-hot.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+): the dynamic loader
    // then reads ~10 KiB of relocation records at start instead of ~600 KiB.
    println!("cargo:rustc-link-arg-bin=trellis-proxy=-Wl,-z,pack-relative-relocs");
    // Not in unoptimised builds: matching the list's names costs the link
    // seconds, and their memory does not matter.
    if std::env::var("OPT_LEVEL").as_deref() == Ok("0") {
        return;
    }
    // The functions a running proxy executes, placed together at the start
    // of the code (`.text.hot`, a list `bench/link-order.sh` made from a
    // profile): the kernel maps an executable's pages a whole page-cache
    // folio or fault-around window at a time, so scattered hot functions
    // keep most of the executable resident. Functions named once are
    // matched without their mangling hash (any build); instances of generic
    // functions with it, which names them in any build of this profile
    // whatever its path or package selection (the hash follows cargo's `-C
    // metadata`, which `tests/hot_code.rs` keeps selection-independent).
    // The script only adds an output section (INSERT), the rest of the
    // layout is the linker's. (`tests/hot_code.rs` says when the list has
    // gone stale.)
    println!(
        "cargo:rustc-link-arg-bin=trellis-proxy=-Wl,-T,{}",
        script.display()
    );
}
