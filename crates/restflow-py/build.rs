//! Sets PyO3's cfgs (`Py_GIL_DISABLED`, `Py_3_*`) for this crate, so code
//! that must differ on a free-threaded interpreter can say so.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
