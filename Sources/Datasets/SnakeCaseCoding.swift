/// A coding key made from a string, for types that read a key under either of two spellings.
public struct AnyCodingKey: CodingKey, Hashable, Sendable {
    public var stringValue: String
    public var intValue: Int? { nil }
    public init(_ string: String) { stringValue = string }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }

    /// The camelCase spelling of a snake_case key (`min_x` → `minX`), as the project wrote its
    /// JSON before 2026-12-03.
    public var camelCase: AnyCodingKey {
        let parts = stringValue.split(separator: "_")
        return AnyCodingKey(parts.enumerated().map { $0.offset == 0 ? String($0.element) : $0.element.capitalized }.joined())
    }
}

extension KeyedDecodingContainer where Key == AnyCodingKey {
    /// The value under the snake_case `key` or, in a file written before the project settled on
    /// snake_case, under its camelCase spelling.
    public func decode<T: Decodable>(_ type: T.Type, snakeOrCamel key: String) throws -> T {
        let snake = AnyCodingKey(key)
        if contains(snake) || !contains(snake.camelCase) { return try decode(type, forKey: snake) }
        return try decode(type, forKey: snake.camelCase)
    }

    public func decodeIfPresent<T: Decodable>(_ type: T.Type, snakeOrCamel key: String) throws -> T? {
        let snake = AnyCodingKey(key)
        return try decodeIfPresent(type, forKey: snake) ?? decodeIfPresent(type, forKey: snake.camelCase)
    }
}
