"""Class-conditional diffusion models: training, DDIM sampling, class forgetting and its
evaluation. ``config`` is torch-free (the API imports it); everything else needs torch and
``diffusers`` (the worker extra)."""
