"""What the commands run: a training run (``runs.train``, with its trainer ``runs.trainer``) and the
evaluation of a model (``runs.evaluate``). The layer that joins the model, the data and the evaluation."""
