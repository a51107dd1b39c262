"""Helpers around the model: checked weight loading and published-format checkpoints
(`checkpoint`), backbone weight conversion (`weight_conversion`), drawing and summarising
predictions (`visualizer`)."""
