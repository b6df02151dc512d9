//! Link options for the sidecar binary, which runs once per pod: its resident
//! memory is mostly the executable's pages, so they are kept few.
fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36+): the dynamic loader
    // then reads ~10 KiB of relocation records at start instead of ~600 KiB.
    println!("cargo:rustc-link-arg-bin=trellis-proxy=-Wl,-z,pack-relative-relocs");
}
