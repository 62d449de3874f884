//! What a plugin declares: a plugin is a shared library exporting one C-ABI entry point,
//! `minerva_plugin_v1`, which returns a `#[repr(C)]` [`PluginDeclaration`]: the interface version
//! and a fingerprint of the build (this crate's version, rustc version, target, profile) as plain
//! C data. Only when both equal the host's does the host call `create`, which hands over an
//! `Arc<dyn InferenceBackend>`: Rust types cross the boundary only between builds whose layouts
//! are known to agree. Write a plugin with [`crate::export_engine!`]; the host's side (finding
//! and opening libraries) is `minerva_runtime::plugin`; docs/PLUGINS.md has the whole contract.

use std::ffi::{c_char, c_void};

/// Version of the plugin interface (the declaration's layout and meaning).
pub const PLUGIN_API_VERSION: u32 = 1;

/// Name of the entry point every plugin exports.
pub const ENTRY_POINT: &str = "minerva_plugin_v1";

/// What must match between host and plugin for Rust types to cross (NUL-terminated).
pub const ABI_FINGERPRINT: &str = concat!(
    "minerva-core ",
    env!("CARGO_PKG_VERSION"),
    "; plugin api 1; ",
    env!("PLUGIN_ABI_RUSTC"),
    "; ",
    env!("PLUGIN_ABI_TARGET"),
    "; ",
    env!("PLUGIN_ABI_PROFILE"),
    "\0"
);

/// What `minerva_plugin_v1` returns. Plain C data, readable whatever compiled the plugin.
#[repr(C)]
pub struct PluginDeclaration {
    /// [`PLUGIN_API_VERSION`] of the plugin's build.
    pub api_version: u32,
    /// [`ABI_FINGERPRINT`] of the plugin's build, NUL-terminated.
    pub abi: *const c_char,
    /// Creates the engine: a `Box<Arc<dyn InferenceBackend>>` as a raw pointer. Call only when
    /// `api_version` and `abi` match the host's.
    pub create: unsafe extern "C" fn() -> *mut c_void,
}

/// Define a plugin's entry point for an engine built by `$constructor`.
#[macro_export]
macro_rules! export_engine {
    ($constructor:expr) => {
        /// Minerva's plugin entry point (docs/PLUGINS.md).
        #[no_mangle]
        pub extern "C" fn minerva_plugin_v1() -> $crate::plugin::PluginDeclaration {
            unsafe extern "C" fn create() -> *mut ::std::ffi::c_void {
                let engine: ::std::sync::Arc<dyn $crate::InferenceBackend> =
                    ::std::sync::Arc::new($constructor);
                ::std::boxed::Box::into_raw(::std::boxed::Box::new(engine)).cast()
            }
            $crate::plugin::PluginDeclaration {
                api_version: $crate::plugin::PLUGIN_API_VERSION,
                abi: $crate::plugin::ABI_FINGERPRINT.as_ptr().cast(),
                create,
            }
        }
    };
}

/// The fingerprint without its NUL, for messages.
pub fn abi_fingerprint() -> &'static str {
    ABI_FINGERPRINT.trim_end_matches('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_names_the_build() {
        let f = abi_fingerprint();
        assert!(
            f.starts_with("minerva-core ") && f.contains("rustc "),
            "{f}"
        );
        assert!(ABI_FINGERPRINT.ends_with('\0'));
    }
}
