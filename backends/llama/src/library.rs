//! llama.cpp's process-wide state: ggml's backend modules loaded, the abort hook installed,
//! llama.cpp initialised, once per process on first use.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};
use minerva_core::{Error, Result};

use crate::ENGINE_NAME;

/// llama.cpp's process-wide state, initialised once.
pub(crate) fn llama_backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default());
            crate::ggml_modules::load().map_err(|e| e.to_string())?;
            // SAFETY: installs a callback that lives for the program.
            unsafe { llama_cpp_sys_2::ggml_set_abort_callback(Some(report_abort)) };
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::engine(ENGINE_NAME, format!("initialising llama.cpp: {e}")))
}

/// ggml is about to abort the process (a failed assertion, a lost RPC worker): say why on
/// stderr, and to the serving process when this is a runner, so that the requests it fails
/// carry the reason.
unsafe extern "C" fn report_abort(message: *const std::ffi::c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: ggml passes its NUL-terminated message.
    let message = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy();
    eprintln!("ggml: {message}");
    // `/long/path/to/ggml-rpc.cpp:566: what happened` -> `ggml-rpc.cpp:566: what happened`.
    let short = match message.split_once(": ") {
        Some((place, what)) => format!("{}: {what}", place.rsplit('/').next().unwrap_or(place)),
        None => message.to_string(),
    };
    minerva_core::fatal::report(&format!("ggml: {short}"));
}
