//! Fuzz targets live in `tests/fuzz/`; see README.md.
