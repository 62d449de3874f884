//! Placeholder for `mlx-sys`: never compiled, its build script stops first.
