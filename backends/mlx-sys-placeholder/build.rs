//! Fails the build with the one step that is missing.

fn main() {
    panic!(
        "\n\nMLX is not set up on this machine: run `scripts/setup-mlx` (the README's set-up \
         command `scripts/setup` runs it). It installs a prebuilt MLX and writes \
         .cargo/config.toml, which replaces this placeholder with the real mlx-sys.\n\n"
    );
}
