"""One module per method family: the complete method (loss, gradient, sampler, student wrapper), each equation above the line computing it."""
