// Every layer imports Torch; it brings the two Foundation-only targets below it: the project's
// progress shape (Core), and the safetensors codec that tensors load from
// and save to (SafeTensorsTensor.swift).
@_exported import Core
@_exported import SafeTensors
