//! Sets PyO3's cfgs (`Py_GIL_DISABLED`, `Py_3_*`) for this crate, so code
//! that must differ on a free-threaded interpreter can say so, and
//! `compact_int_layout_known`: a CPython build against the full (not the
//! limited) API, whose `int` layout `encode::one_digit_int` may read.

use pyo3_build_config::{PythonAbiKind, PythonImplementation};

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    println!("cargo:rustc-check-cfg=cfg(compact_int_layout_known)");
    let config = pyo3_build_config::get();
    let abi = config.target_abi();
    let full_api = matches!(abi.kind(), PythonAbiKind::VersionSpecific(_));
    if config.implementation() == PythonImplementation::CPython && full_api {
        println!("cargo:rustc-cfg=compact_int_layout_known");
    }
}
