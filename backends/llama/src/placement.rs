//! Which device holds which of a model's layers. Without workers or GPUs everything stays on
//! this machine's CPU. With `rpc = [...]` (or local GPUs) llama.cpp's own split applies: the
//! first layers stay on the CPU and the last `offloaded` ones go over the other devices in
//! proportion to the memory each reports; [`plan`] computes the same split to report it. With
//! workers and no local GPU the output layer stays on this CPU too, so that a step sends a hidden
//! state over the network rather than a row of logits (49,152 floats for SmolLM2, 196 KB).

use std::pin::Pin;

use llama_cpp_2::model::params::LlamaModelParams;
use minerva_core::{Error, LoadSpec, ModelPart, Result};

use crate::rpc::{self, Device};
use crate::ENGINE_NAME;

/// The output layer's weights (and, for models that tie it to the embeddings, its copy of them).
const OUTPUT_WEIGHTS: &std::ffi::CStr = c"^(output|output_norm|token_embd)\\.weight$";

/// How a model is loaded across devices: llama.cpp's parameters and the placement to report.
pub struct Plan {
    /// The model parameters that give this placement.
    pub params: Pin<Box<LlamaModelParams>>,
    /// The devices in the order a token passes through them.
    pub parts: Vec<ModelPart>,
    /// Whether layers go to a GPU of this machine.
    pub local_gpu: bool,
}

/// The placement of `spec`'s model: `offloaded` layers (counting the output layer, llama.cpp's
/// `n_gpu_layers`) on the workers and local GPUs; by default all of them with a local GPU, else
/// an equal share per device with the CPU keeping the first share.
pub fn plan(spec: &LoadSpec, workers: &[String], offloaded: Option<u32>) -> Result<Plan> {
    let layers = spec.detected.info.layers.unwrap_or(0) as u32;
    let local = rpc::local_gpus();
    let mut devices = rpc::connect(workers)?;
    devices.extend(local.iter().cloned());
    if devices.is_empty() {
        if offloaded.is_some() {
            return Err(Error::Config(format!(
                "model `{}`: engine_options.gpu_layers places layers on `rpc` workers or GPUs, \
                 and this model has neither",
                spec.id
            )));
        }
        return Ok(Plan {
            params: Box::pin(LlamaModelParams::default().with_n_gpu_layers(0)),
            parts: parts(layers, 0, &[], false),
            local_gpu: false,
        });
    }
    let offloaded = offloaded
        .unwrap_or(if local.is_empty() {
            layers + 1 - layers / (devices.len() as u32 + 1)
        } else {
            layers + 1
        })
        .min(layers + 1);
    let indices: Vec<usize> = devices.iter().map(|d| d.index).collect();
    let mut params = Box::pin(
        LlamaModelParams::default()
            .with_n_gpu_layers(offloaded)
            .with_devices(&indices)
            .map_err(|e| Error::engine(ENGINE_NAME, format!("choosing devices: {e}")))?,
    );
    let output_here = local.is_empty();
    if output_here {
        params.as_mut().add_cpu_buft_override(OUTPUT_WEIGHTS);
    }
    Ok(Plan {
        params,
        parts: parts(layers, offloaded, &devices, output_here),
        local_gpu: !local.is_empty() && offloaded > 0,
    })
}

/// The device of each layer (`layers` is the output layer; `None`: the CPU), as llama.cpp's
/// loader assigns them when no `tensor_split` is given.
fn assign(layers: u32, offloaded: u32, devices: &[Device]) -> Vec<Option<usize>> {
    let first_offloaded = (layers + 1).saturating_sub(offloaded);
    let active = if devices.is_empty() {
        0
    } else {
        offloaded.min(layers + 1)
    };
    // Cumulative shares in f32, summed and divided in llama.cpp's order.
    let mut bounds: Vec<f32> = devices.iter().map(|d| d.memory as f32).collect();
    let mut sum = 0.0f32;
    for bound in &mut bounds {
        sum += *bound;
        *bound = sum;
    }
    for bound in &mut bounds {
        *bound /= sum;
    }
    (0..=layers)
        .map(|layer| {
            if layer < first_offloaded || layer - first_offloaded >= active {
                return None;
            }
            let at = (layer - first_offloaded) as f32 / active as f32;
            Some(
                bounds
                    .iter()
                    .position(|&bound| bound > at)
                    .unwrap_or(devices.len() - 1),
            )
        })
        .collect()
}

/// Runs of consecutive layers on one device; the output layer on the CPU when `output_here`.
fn parts(layers: u32, offloaded: u32, devices: &[Device], output_here: bool) -> Vec<ModelPart> {
    let mut parts: Vec<(Option<usize>, ModelPart)> = Vec::new();
    let mut assigned = assign(layers, offloaded, devices);
    if output_here {
        assigned.pop();
    }
    for (layer, device) in assigned.into_iter().enumerate() {
        let output = layer as u32 == layers;
        match parts.last_mut() {
            Some((last, part)) if *last == device => {
                if output {
                    part.output = true;
                } else {
                    part.layers += 1;
                }
            }
            _ => parts.push((
                device,
                ModelPart {
                    device: device.map_or_else(|| "CPU".into(), |d| devices[d].name.clone()),
                    first_layer: layer as u32,
                    layers: u32::from(!output),
                    output,
                },
            )),
        }
    }
    let mut parts: Vec<ModelPart> = parts.into_iter().map(|(_, part)| part).collect();
    if output_here {
        if let Some(cpu) = parts.iter_mut().find(|p| p.device == "CPU") {
            cpu.output = true;
        } else {
            parts.push(ModelPart {
                device: "CPU".into(),
                first_layer: layers,
                layers: 0,
                output: true,
            });
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(memory: &[usize]) -> Vec<Device> {
        memory
            .iter()
            .enumerate()
            .map(|(index, &memory)| Device {
                index,
                name: format!("RPC{index}"),
                memory,
                kind: "rpc".into(),
                description: String::new(),
            })
            .collect()
    }

    fn summary(parts: &[ModelPart]) -> Vec<(String, u32, u32, bool)> {
        parts
            .iter()
            .map(|p| (p.device.clone(), p.first_layer, p.layers, p.output))
            .collect()
    }

    #[test]
    fn no_devices_keep_everything_on_the_cpu() {
        assert_eq!(
            summary(&parts(30, 0, &[], false)),
            [("CPU".into(), 0, 30, true)]
        );
    }

    #[test]
    fn two_equal_workers_share_the_offloaded_layers_as_llama_cpp_does() {
        // 30 layers, the default for two workers: the CPU keeps 10, 21 (with the output) go out.
        assert_eq!(
            summary(&parts(30, 21, &workers(&[8 << 30, 8 << 30]), false)),
            [
                ("CPU".into(), 0, 10, false),
                ("RPC0".into(), 10, 11, false),
                ("RPC1".into(), 21, 9, true)
            ]
        );
    }

    #[test]
    fn shares_follow_memory_and_everything_can_go_out() {
        assert_eq!(
            summary(&parts(30, 31, &workers(&[3 << 30, 1 << 30]), false)),
            [("RPC0".into(), 0, 24, false), ("RPC1".into(), 24, 6, true)]
        );
    }

    #[test]
    fn the_output_layer_can_stay_on_the_cpu() {
        let two = workers(&[8 << 30, 8 << 30]);
        assert_eq!(
            summary(&parts(30, 21, &two, true)),
            [
                ("CPU".into(), 0, 10, true),
                ("RPC0".into(), 10, 11, false),
                ("RPC1".into(), 21, 9, false)
            ]
        );
        assert_eq!(
            summary(&parts(30, 31, &two, true)),
            [
                ("RPC0".into(), 0, 16, false),
                ("RPC1".into(), 16, 14, false),
                ("CPU".into(), 30, 0, true)
            ]
        );
    }
}
