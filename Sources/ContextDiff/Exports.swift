// `import ContextDiff` gives the whole library: the paper's networks and pipelines (this target)
// with the layers they are written in terms of.
@_exported import Diffusion
@_exported import TextEncoders
