//! ggml's RPC backend, behind this one seam: this machine's ggml devices served to other
//! processes ([`serve_worker`], `minerva worker --rpc`) and workers' devices used for part of a
//! model's layers ([`connect`]). `llama-cpp-2` does not wrap ggml-rpc, so its two C functions are
//! found here through the RPC backend's registry; llama.cpp is built with `GGML_RPC=ON`
//! (scripts/setup-mlx writes that into the cargo configuration, and llama-cpp-sys-2 hands
//! `GGML_*` variables to CMake).
//!
//! ggml's protocol has no authentication and a worker serves one head at a time.

use std::ffi::{c_char, CStr, CString};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use llama_cpp_sys_2::{ggml_backend_dev_t, ggml_backend_reg_t};
use minerva_core::{Error, Result};

use crate::ENGINE_NAME;

/// `ggml_backend_rpc_add_server`: a registry for the worker at `endpoint`.
type AddServer = unsafe extern "C" fn(endpoint: *const c_char) -> ggml_backend_reg_t;
/// `ggml_backend_rpc_start_server`: serve `devices` until the process ends.
type StartServer = unsafe extern "C" fn(
    endpoint: *const c_char,
    cache_dir: *const c_char,
    n_threads: usize,
    n_devices: usize,
    devices: *mut ggml_backend_dev_t,
);

/// One of the RPC backend's functions, found through its registry (ggml's RPC client is a
/// library loaded at run time, see [`crate::ggml_modules`]).
fn rpc_function(name: &CStr) -> Result<*mut std::ffi::c_void> {
    crate::library::llama_backend()?;
    // SAFETY: registries live for the process; the name is NUL-terminated.
    let function = unsafe {
        let registry = llama_cpp_sys_2::ggml_backend_reg_by_name(c"RPC".as_ptr());
        if registry.is_null() {
            std::ptr::null_mut()
        } else {
            llama_cpp_sys_2::ggml_backend_reg_get_proc_address(registry, name.as_ptr())
        }
    };
    if function.is_null() {
        return Err(Error::engine(
            ENGINE_NAME,
            format!(
                "ggml's RPC backend (libggml-rpc.so) is not loaded, so {} is missing",
                name.to_string_lossy()
            ),
        ));
    }
    Ok(function)
}

/// How long a worker gets to accept a connection before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A device other than the CPU (a worker's, or a local GPU) as this process sees it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its index in ggml's device list (what `LlamaModelParams::with_devices` takes).
    pub index: usize,
    /// ggml's name for it, with the worker's address for a worker's, e.g. `RPC0[127.0.0.1:50052]`.
    pub name: String,
    /// The memory it reports (llama.cpp splits layers in proportion to it).
    pub memory: usize,
    /// Its backend in lower case: `cuda`, `rpc`, ...
    pub kind: String,
    /// What the backend says it is, e.g. `NVIDIA H100 80GB HBM3`.
    pub description: String,
}

/// The devices of the workers at `endpoints` (`host:port`), in order, registered with ggml once
/// per process. A worker that does not answer is an error naming its address (ggml itself
/// would abort the process).
pub fn connect(endpoints: &[String]) -> Result<Vec<Device>> {
    static REGISTERED: Mutex<Vec<(String, Vec<usize>)>> = Mutex::new(Vec::new());
    let mut devices = Vec::new();
    for endpoint in endpoints {
        probe(endpoint)?;
        let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        let indices = match registered.iter().find(|(e, _)| e == endpoint) {
            Some((_, indices)) => indices.clone(),
            None => {
                let indices = register(endpoint)?;
                registered.push((endpoint.clone(), indices.clone()));
                indices
            }
        };
        for index in indices {
            let device = describe(index);
            devices.push(Device {
                name: format!("{}[{endpoint}]", device.name),
                ..device
            });
        }
    }
    Ok(devices)
}

/// Check that `endpoint` is `host:port` and something listens there.
fn probe(endpoint: &str) -> Result<()> {
    let unreachable = |why: String| {
        Error::engine(
            ENGINE_NAME,
            format!(
                "ggml RPC worker {endpoint} is not reachable ({why}); start it there with \
                 `minerva worker --rpc --host <address> --port <port>`"
            ),
        )
    };
    let valid = endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        return Err(Error::Config(format!(
            "rpc worker `{endpoint}` is not `host:port`"
        )));
    }
    let addresses: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let mut last = String::from("the name resolves to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// Add the worker at `endpoint` to ggml's devices; their indices.
fn register(endpoint: &str) -> Result<Vec<usize>> {
    let c_endpoint = CString::new(endpoint)
        .map_err(|_| Error::Config(format!("rpc worker `{endpoint}` contains a NUL byte")))?;
    let add_server = rpc_function(c"ggml_backend_rpc_add_server")?;
    // SAFETY: the RPC backend's function of this signature (ggml-rpc.h).
    let add_server: AddServer = unsafe { std::mem::transmute(add_server) };
    // SAFETY: ggml copies the endpoint; the registry it returns lives for the process.
    unsafe {
        let registry = add_server(c_endpoint.as_ptr());
        if registry.is_null() {
            return Err(Error::engine(
                ENGINE_NAME,
                format!("ggml RPC worker {endpoint} offers no devices"),
            ));
        }
        llama_cpp_sys_2::ggml_backend_register(registry);
        let ours: Vec<ggml_backend_dev_t> =
            (0..llama_cpp_sys_2::ggml_backend_reg_dev_count(registry))
                .map(|i| llama_cpp_sys_2::ggml_backend_reg_dev_get(registry, i))
                .collect();
        Ok((0..llama_cpp_sys_2::ggml_backend_dev_count())
            .filter(|&i| ours.contains(&llama_cpp_sys_2::ggml_backend_dev_get(i)))
            .collect())
    }
}

/// Serve this machine's ggml devices (its GPUs, else the CPU) to heads over ggml's RPC protocol
/// at `host:port`, with `threads` CPU threads and, when given, a cache of tensors in `cache_dir`
/// (a restarted head then loads the weights it sent before from the worker's disk). Returns only
/// when the server cannot start.
pub fn serve_worker(host: &str, port: u16, threads: usize, cache_dir: Option<&Path>) -> Result<()> {
    crate::library::llama_backend()?;
    let endpoint = format!("{host}:{port}");
    // ggml prints why it cannot listen and returns; find out first, with the reason.
    drop(
        TcpListener::bind((host, port))
            .map_err(|e| Error::Config(format!("cannot listen on {endpoint} for RPC: {e}")))?,
    );
    let cache = match cache_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Config(format!("cannot create the cache {}: {e}", dir.display()))
            })?;
            Some(
                CString::new(dir.to_string_lossy().as_bytes())
                    .map_err(|_| Error::Config("the cache path contains a NUL byte".into()))?,
            )
        }
        None => None,
    };
    let c_endpoint = CString::new(endpoint.clone())
        .map_err(|_| Error::Config("the host contains a NUL byte".into()))?;
    let mut devices = local_devices();
    let start_server = rpc_function(c"ggml_backend_rpc_start_server")?;
    // SAFETY: the RPC backend's function of this signature (ggml-rpc.h).
    let start_server: StartServer = unsafe { std::mem::transmute(start_server) };
    // SAFETY: every pointer outlives the call, which serves until the process ends.
    unsafe {
        start_server(
            c_endpoint.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads,
            devices.len(),
            devices.as_mut_ptr(),
        );
    }
    Err(Error::engine(
        ENGINE_NAME,
        format!("the RPC server at {endpoint} stopped; its message above says why"),
    ))
}

/// This machine's GPUs, or its CPU when it has none (what a worker serves).
fn local_devices() -> Vec<ggml_backend_dev_t> {
    // SAFETY: ggml's device list is read-only after initialisation; indices are below its count.
    unsafe {
        match local_gpus().as_slice() {
            [] => vec![llama_cpp_sys_2::ggml_backend_dev_by_type(
                llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_CPU,
            )],
            gpus => gpus
                .iter()
                .map(|d| llama_cpp_sys_2::ggml_backend_dev_get(d.index))
                .collect(),
        }
    }
}

/// This machine's own GPUs (not workers').
pub fn local_gpus() -> Vec<Device> {
    // SAFETY: reads ggml's registered devices and their registries' names.
    let local_gpu = |index| unsafe {
        let device = llama_cpp_sys_2::ggml_backend_dev_get(index);
        let registry = llama_cpp_sys_2::ggml_backend_dev_backend_reg(device);
        llama_cpp_sys_2::ggml_backend_dev_type(device)
            == llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_GPU
            && CStr::from_ptr(llama_cpp_sys_2::ggml_backend_reg_name(registry)).to_bytes() != b"RPC"
    };
    // SAFETY: the count of registered devices.
    let count = unsafe { llama_cpp_sys_2::ggml_backend_dev_count() };
    (0..count).filter(|&i| local_gpu(i)).map(describe).collect()
}

/// What ggml knows of its device `index` (below its device count).
fn describe(index: usize) -> Device {
    let text = |p: *const c_char| {
        // SAFETY: ggml returns NUL-terminated strings that live as long as the device.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    // SAFETY: devices are never unregistered, so the index stays valid; ggml writes the sizes.
    unsafe {
        let device = llama_cpp_sys_2::ggml_backend_dev_get(index);
        let registry = llama_cpp_sys_2::ggml_backend_dev_backend_reg(device);
        let (mut free, mut total) = (0, 0);
        llama_cpp_sys_2::ggml_backend_dev_memory(device, &mut free, &mut total);
        Device {
            index,
            name: text(llama_cpp_sys_2::ggml_backend_dev_name(device)),
            memory: free,
            kind: text(llama_cpp_sys_2::ggml_backend_reg_name(registry)).to_lowercase(),
            description: text(llama_cpp_sys_2::ggml_backend_dev_description(device)),
        }
    }
}
