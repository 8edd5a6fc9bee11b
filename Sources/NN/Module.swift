import Torch

/// The base of every layer and model.
///
/// Parameters are discovered by reflection: every stored property of type `Tensor` (or a
/// non-nil `Tensor?`) is a parameter named after the property; every `Module`, `Module?` or
/// `[Module]` property is a child whose parameters are prefixed with its name (`blocks.0.norm.weight`).
/// Leading underscores (from property wrappers) are dropped. A property whose checkpoint key
/// differs from its Swift name (diffusers' `to_q` for `toQ`) declares it where it is declared,
/// with ``CheckpointKey``.
open class Module {
    /// Training mode (dropout active, ...). Set for a whole tree with ``train(_:)``.
    public private(set) var isTraining = true

    public init() {}

    /// Walks the stored properties of this module's class and its superclasses, in declaration order.
    private func forEachChild(_ body: (String, Any) -> Void) {
        var mirror: Mirror? = Mirror(reflecting: self)
        var levels: [Mirror] = []
        while let m = mirror {
            levels.append(m)
            mirror = m.superclassMirror
        }
        for level in levels.reversed() {
            for child in level.children {
                if let keyed = child.value as? any CheckpointKeyed {
                    if let value = keyed.storedValue { body(keyed.key, value) }
                    continue
                }
                guard var label = child.label else { continue }
                if label.hasPrefix("_") { label.removeFirst() }
                body(label, child.value)
            }
        }
    }

    /// Direct sub-modules with their keys.
    public func namedChildren() -> [(String, Module)] {
        var out: [(String, Module)] = []
        forEachChild { name, value in
            switch value {
            case let m as Module: out.append((name, m))
            case let m as Module?: if let m { out.append((name, m)) }
            case let ms as [Module]:
                for (i, m) in ms.enumerated() { out.append(("\(name).\(i)", m)) }
            default: break
            }
        }
        return out
    }

    /// Every parameter of this module and its descendants, with its dotted key, in a stable order.
    public func namedParameters() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        forEachChild { name, value in
            switch value {
            case let t as Tensor: out.append((name, t))
            case let t as Tensor?: if let t { out.append((name, t)) }
            default: break
            }
        }
        for (name, child) in namedChildren() {
            out += child.namedParameters().map { ("\(name).\($0.0)", $0.1) }
        }
        return out
    }

    public func parameters() -> [Tensor] { namedParameters().map(\.1) }

    /// The total number of scalar parameters.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.count } }

    /// The parameters by key.
    public func stateDict() -> [String: Tensor] {
        Dictionary(namedParameters(), uniquingKeysWith: { first, _ in first })
    }

    /// Sets the training flag on this module and all descendants.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, child) in namedChildren() { child.train(on) }
    }

    public func eval() { train(false) }

    /// This module and every module below it, parents before their children. Walking the tree
    /// reflects over every module (``namedChildren()``); a caller that sets the training flag
    /// every step keeps this list and calls ``setTraining(_:of:)``.
    public func descendants() -> [Module] {
        [self] + namedChildren().flatMap { $0.1.descendants() }
    }

    /// Sets the training flag of exactly `modules`, without walking their children.
    public static func setTraining(_ on: Bool, of modules: [Module]) {
        for m in modules where m.isTraining != on { m.isTraining = on }
    }

    /// Marks every parameter as requiring gradients (or not).
    public func requireGrad(_ flag: Bool = true) throws {
        for p in parameters() { try p.requiringGrad(flag) }
    }

    /// Drops every parameter's gradient.
    public func zeroGrad() throws {
        for p in parameters() { try p.zeroGrad() }
    }

    /// Converts every parameter to `dtype` in place (keeping tensor identities).
    public func convert(to dtype: DType) throws {
        try Torch.withNoGrad {
            for p in parameters() where p.dtype != dtype && p.dtype.isFloatingPoint {
                try p.setData(p.detached().to(dtype))
            }
        }
    }

    /// Moves every parameter to `device` in place, keeping tensor identities (an optimizer built
    /// before the move keeps working), as PyTorch's `Module.to` does. Every copy is made before
    /// any parameter changes, so a failed move (a device libtorch lacks, one whose storage cannot
    /// take another device's data, such as meta) leaves the module where it was.
    public func to(_ device: Device) throws {
        try Torch.withNoGrad {
            let params = parameters()
            let moved = try params.map { try $0.detached().to(device) }
            for (param, copy) in zip(params, moved) where try param.device != device {
                try param.setData(copy)
            }
        }
    }

    /// The device holding the parameters: nil for a module without any; an error when they are
    /// split across devices.
    public var device: Device? {
        get throws {
            let devices = try Set(parameters().map { try $0.device })
            guard devices.count <= 1 else {
                throw ModuleError.invalidInput("parameters on several devices: \(devices.map(\.description).sorted())")
            }
            return devices.first
        }
    }

    /// Copies `state` into the parameters, verifying that every key is present, none is unused,
    /// and shapes and dtypes agree. Throws ``ModuleError`` naming the first offending tensor.
    public func load(_ state: [String: Tensor], allowDTypeConversion: Bool = false) throws {
        let own = namedParameters()
        let ownKeys = Set(own.map(\.0))
        if let extra = state.keys.sorted().first(where: { !ownKeys.contains($0) }) {
            throw ModuleError.unexpectedKey(extra)
        }
        for (key, param) in own {
            guard let value = state[key] else { throw ModuleError.missingKey(key) }
            guard value.shape == param.shape else {
                throw ModuleError.shapeMismatch(key: key, expected: param.shape, found: value.shape)
            }
            guard value.dtype == param.dtype || allowDTypeConversion else {
                throw ModuleError.dtypeMismatch(key: key, expected: param.dtype, found: value.dtype)
            }
        }
        try Torch.withNoGrad {
            for (key, param) in own { try param.copy(from: state[key]!) }
        }
    }
}

/// Declares a parameter's or a child module's checkpoint key beside the property:
///
/// ```swift
/// @CheckpointKey("to_q") public private(set) var toQ: Linear
/// init(...) { _toQ.wrappedValue = try Linear(...) }
/// ```
///
/// The key replaces the property's name in ``Module/namedParameters()`` (`to_q.weight`); it may
/// contain dots (`mid.resnet_1`) to nest under a name that has no module of its own. Set the
/// value through the backing property (`_toQ.wrappedValue = ...`) in `init`, as Swift requires
/// for a wrapper with arguments, and before reading it.
@propertyWrapper
public struct CheckpointKey<Value> {
    public let key: String
    private var storage: Value?

    public init(_ key: String) { self.key = key }

    public var wrappedValue: Value {
        get {
            guard let storage else { preconditionFailure("\(key) read before init set it") }
            return storage
        }
        set { storage = newValue }
    }
}

/// What ``Module``'s reflection reads from a ``CheckpointKey``.
protocol CheckpointKeyed {
    var key: String { get }
    var storedValue: Any? { get }
}

extension CheckpointKey: CheckpointKeyed {
    var storedValue: Any? { storage.map { $0 as Any } }
}

/// Errors from building a module, calling it, or loading weights into it.
public enum ModuleError: Error, Equatable, CustomStringConvertible {
    case missingKey(String)
    case unexpectedKey(String)
    case shapeMismatch(key: String, expected: [Int], found: [Int])
    case dtypeMismatch(key: String, expected: DType, found: DType)
    /// A configuration the module cannot be built from (names the module and the field).
    case invalidConfiguration(String)
    /// An input the module cannot take (a wrong shape, too many tokens, a missing mask).
    case invalidInput(String)

    public var description: String {
        switch self {
        case let .missingKey(k): "checkpoint is missing tensor '\(k)'"
        case let .unexpectedKey(k): "checkpoint has unexpected tensor '\(k)'"
        case let .shapeMismatch(k, e, f): "tensor '\(k)' has shape \(f), the model expects \(e)"
        case let .dtypeMismatch(k, e, f): "tensor '\(k)' has dtype \(f), the model expects \(e)"
        case let .invalidConfiguration(message), let .invalidInput(message): message
        }
    }
}

/// A layer with one input and one output.
public protocol UnaryLayer {
    func callAsFunction(_ x: Tensor) throws -> Tensor
}
