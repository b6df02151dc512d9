//! Link options for the binaries whose resident memory is mostly their own
//! code: the sidecar, which runs once per pod, and the control plane.
fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for bin in HOT_CODE_ORDERED {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join(format!("{bin}-hot.ld")).display()
        );
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+): the dynamic loader
    // then reads ~10 KiB of relocation records at start instead of ~600 KiB.
    for bin in HOT_CODE_ORDERED {
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,-z,pack-relative-relocs");
    }
    // Not in unoptimised builds: matching the lists' names costs the link
    // seconds, and their memory does not matter.
    if std::env::var("OPT_LEVEL").as_deref() == Ok("0") {
        return;
    }
    // The functions a running binary executes, placed together at the start
    // of its code (`.text.hot`, a list `bench/link-order.sh` made from a
    // profile): the kernel maps an executable's pages a whole page-cache
    // folio or fault-around window at a time, so scattered hot functions
    // keep most of the executable resident. Functions named once are
    // matched without their mangling hash (any build); instances of generic
    // functions with it, which names them in any build of this profile
    // whatever its path or package selection (the hash follows cargo's `-C
    // metadata`, which `tests/hot_code.rs` keeps selection-independent).
    // The script only adds an output section (INSERT), the rest of the
    // layout is the linker's. (`tests/hot_code.rs` says when a list has
    // gone stale.)
    for bin in HOT_CODE_ORDERED {
        println!(
            "cargo:rustc-link-arg-bin={bin}=-Wl,-T,{}",
            dir.join(format!("{bin}-hot.ld")).display()
        );
    }
}

/// The binaries with a hot-code list, `<name>-hot.ld` beside this file.
const HOT_CODE_ORDERED: [&str; 2] = ["trellis-proxy", "trellisd"];
