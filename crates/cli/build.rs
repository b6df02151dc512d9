//! Link options for the sidecar binary, which runs once per pod: its resident
//! memory is mostly the executable's pages, so they are kept few.
fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36+): the dynamic loader
    // then reads ~10 KiB of relocation records at start instead of ~600 KiB.
    println!("cargo:rustc-link-arg-bin=trellis-proxy=-Wl,-z,pack-relative-relocs");
    // The functions a running proxy executes, placed together at the start
    // of the code (a list made by `bench/link-order.sh` from a profile of
    // this very build): the kernel maps executable pages a whole page-cache
    // folio at a time, so scattered hot functions make most of the
    // executable resident.
    println!("cargo:rerun-if-env-changed=TRELLIS_PROXY_LINK_ORDER");
    if let Some(order) = std::env::var_os("TRELLIS_PROXY_LINK_ORDER") {
        let order = std::path::Path::new(&order);
        println!("cargo:rerun-if-changed={}", order.display());
        println!(
            "cargo:rustc-link-arg-bin=trellis-proxy=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=trellis-proxy=-Wl,--no-warn-symbol-ordering");
    }
}
