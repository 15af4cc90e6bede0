"""Methods that make a class-conditional diffusion model forget a class: one file each."""
