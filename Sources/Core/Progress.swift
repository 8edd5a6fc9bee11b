/// How far a long operation is, in the one shape every layer reports it (sampling, inversion,
/// tuning, training, rendering, evaluation, fuzzing). The library never prints: it calls a
/// ``ProgressHandler``, and a front end draws a bar, sends an event or ignores it.
public struct ProgressUpdate: Sendable, Equatable {
    /// What is being done ("sampling", "inversion", "training", ...).
    public var phase: String
    /// Units done so far (steps, images, cases), 0...total.
    public var completed: Int
    /// Units in this phase.
    public var total: Int
    /// Named numbers of the latest unit, in display order (e.g. loss, learning rate).
    public var metrics: [Metric]

    public struct Metric: Sendable, Equatable {
        public var name: String
        public var value: Double
        public init(_ name: String, _ value: Double) {
            self.name = name
            self.value = value
        }
    }

    public init(phase: String, completed: Int, total: Int, metrics: [Metric] = []) {
        self.phase = phase
        self.completed = completed
        self.total = total
        self.metrics = metrics
    }

    /// `completed / total` in [0, 1] (1 for an empty phase).
    public var fraction: Double { total > 0 ? min(1, max(0, Double(completed) / Double(total))) : 1 }

    /// The value of the metric `name`, if reported.
    public func metric(_ name: String) -> Double? { metrics.first { $0.name == name }?.value }
}

/// Called as work advances; return `false` to cancel (operations that can stop say so and throw
/// their own "cancelled" error; the others ignore the answer).
public typealias ProgressHandler = (ProgressUpdate) -> Bool
