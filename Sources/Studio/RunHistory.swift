import ContextDiff
import Datasets
import Evaluation
import Foundation
import GRDB
import Workflows

/// A finished generation as the gallery lists it.
public struct StudioRun: Codable, Sendable, Equatable {
    public var id: String
    /// When it finished, ISO 8601 (UTC).
    public var createdAt: String
    public var prompt: String
    /// The request as the library ran it (seed drawn, defaults filled): what "reload" restores.
    public var record: GenerationRecord
    public var imageCount: Int
    public var width: Int
    public var height: Int
    /// Seconds of sampling.
    public var seconds: Double
    /// Where each image is served (`/api/runs/ID/images/K`).
    public var images: [String]

    enum CodingKeys: String, CodingKey {
        case id, prompt, record, width, height, seconds, images
        case createdAt = "created_at", imageCount = "image_count"
    }
}

/// A finished video edit: its prompts, settings, scores and files.
public struct StudioEdit: Codable, Sendable, Equatable {
    public var id: String
    public var createdAt: String
    public var sourcePrompt: String
    public var targetPrompt: String
    public var options: VideoEditOptions
    public var frames: Int
    public var scores: VideoEditScores?
    public var seconds: Double
    /// The source frames side by side, the edited frames side by side, the edit as a GIF.
    public var source: String
    public var edited: String
    public var animation: String

    enum CodingKeys: String, CodingKey {
        case id, options, frames, scores, seconds, source, edited, animation
        case createdAt = "created_at", sourcePrompt = "source_prompt", targetPrompt = "target_prompt"
    }

    /// The files an edit has, by the name its URL ends with.
    public static let files = ["source.png", "edited.png", "edited.gif"]
}

/// The studio's run history: one SQLite database (GRDB) and a folder of PNGs under the data
/// folder. A run's images are written (atomically, each carrying its ``GenerationRecord``)
/// before its row is committed, so a server killed at any point lists no run with missing
/// images; image folders left without a row by such a kill are removed at the next start.
public final class RunHistory: Sendable {
    public let folder: URL
    private let database: DatabaseQueue
    private var imagesFolder: URL { folder.appendingPathComponent("images", isDirectory: true) }
    private var editsFolder: URL { folder.appendingPathComponent("edits", isDirectory: true) }

    public init(folder: URL) throws {
        self.folder = folder
        for name in ["images", "edits"] {
            try FileManager.default.createDirectory(at: folder.appendingPathComponent(name, isDirectory: true), withIntermediateDirectories: true)
        }
        database = try DatabaseQueue(path: folder.appendingPathComponent("studio.sqlite").path)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE run (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    created_at TEXT NOT NULL,
                    prompt TEXT NOT NULL,
                    record TEXT NOT NULL,
                    image_count INTEGER NOT NULL,
                    width INTEGER NOT NULL,
                    height INTEGER NOT NULL,
                    seconds REAL NOT NULL
                );
                """)
        }
        migrator.registerMigration("v2-edits") { db in
            try db.execute(sql: """
                CREATE TABLE edit (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    created_at TEXT NOT NULL,
                    body TEXT NOT NULL
                );
                """)
        }
        try migrator.migrate(database)
        try removeOrphanedImages()
    }

    /// Writes the images, then commits the run; returns it.
    public func record(
        _ images: GeneratedImages, prompt: String, options: GenerationOptions, model: String, seconds: Double
    ) throws -> StudioRun {
        let id = UUID().uuidString.lowercased()
        let runFolder = imagesFolder.appendingPathComponent(id, isDirectory: true)
        try FileManager.default.createDirectory(at: runFolder, withIntermediateDirectories: true)
        for (k, pixels) in images.pixels.enumerated() {
            let image = try RGBImage(width: images.width, height: images.height, pixels: pixels)
            try image.writePNG(
                to: runFolder.appendingPathComponent("\(k).png"),
                record: GenerationRecord(prompts: [prompt], index: k, options: options, model: model))
        }
        let record = GenerationRecord(prompts: [prompt], index: nil, options: options, model: model)
        let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        let created = Self.now()
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO run (id, created_at, prompt, record, image_count, width, height, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [id, created, prompt, json, images.pixels.count, images.width, images.height, seconds])
        }
        guard let run = try run(id: id) else { throw StudioRequestError(status: 500, message: "the run was not recorded") }
        return run
    }

    /// The newest runs first, at most `limit`, older than the run `before` when given.
    public func runs(limit: Int, before: String? = nil) throws -> [StudioRun] {
        try database.read { db in
            let rows: [Row]
            if let before {
                rows = try Row.fetchAll(
                    db, sql: """
                        SELECT * FROM run WHERE seq < (SELECT seq FROM run WHERE id = ?) ORDER BY seq DESC LIMIT ?
                        """, arguments: [before, limit])
            } else {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM run ORDER BY seq DESC LIMIT ?", arguments: [limit])
            }
            return try rows.map(Self.run)
        }
    }

    public func run(id: String) throws -> StudioRun? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM run WHERE id = ?", arguments: [id]).map(Self.run)
        }
    }

    /// The PNG of image `index` of run `id`, when both exist. `id` must be a run's id (a UUID),
    /// so no request names a path.
    public func imageFile(run id: String, index: Int) throws -> URL? {
        guard UUID(uuidString: id) != nil, let run = try run(id: id), (0..<run.imageCount).contains(index) else { return nil }
        return imagesFolder.appendingPathComponent(run.id, isDirectory: true).appendingPathComponent("\(index).png")
    }

    public var count: Int {
        get throws { try database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM run") ?? 0 } }
    }

    /// Now, ISO 8601 in UTC with milliseconds.
    private static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }

    private static func run(_ row: Row) throws -> StudioRun {
        let id: String = row["id"]
        let count: Int = row["image_count"]
        let json: String = row["record"]
        return StudioRun(
            id: id, createdAt: row["created_at"], prompt: row["prompt"],
            record: try JSONDecoder().decode(GenerationRecord.self, from: Data(json.utf8)),
            imageCount: count, width: row["width"], height: row["height"], seconds: row["seconds"],
            images: (0..<count).map { "/api/runs/\(id)/images/\($0)" })
    }

    /// Writes the edit's strips and GIF, then commits it; returns it.
    public func record(_ edit: EditedVideo, spec: VideoEditJobSpec, ffmpeg: FFmpeg, seconds: Double) throws -> StudioEdit {
        let id = UUID().uuidString.lowercased()
        let files = editsFolder.appendingPathComponent(id, isDirectory: true)
        try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
        try edit.source.strip().writePNG(to: files.appendingPathComponent("source.png"))
        try edit.edited.strip().writePNG(to: files.appendingPathComponent("edited.png"))
        try ffmpeg.write(edit.edited, to: files.appendingPathComponent("edited.gif"), scale: 4)
        let base = "/api/edits/\(id)/"
        let record = StudioEdit(
            id: id, createdAt: Self.now(), sourcePrompt: spec.sourcePrompt, targetPrompt: spec.targetPrompt,
            options: spec.options, frames: spec.source.frames.count, scores: edit.scores, seconds: seconds,
            source: base + "source.png", edited: base + "edited.png", animation: base + "edited.gif")
        let body = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        try database.write { db in
            try db.execute(sql: "INSERT INTO edit (id, created_at, body) VALUES (?, ?, ?)", arguments: [id, record.createdAt, body])
        }
        return record
    }

    /// The newest edits first, at most `limit`.
    public func edits(limit: Int) throws -> [StudioEdit] {
        try database.read { db in
            try String.fetchAll(db, sql: "SELECT body FROM edit ORDER BY seq DESC LIMIT ?", arguments: [limit])
                .map { try JSONDecoder().decode(StudioEdit.self, from: Data($0.utf8)) }
        }
    }

    /// An edit's file (one of ``StudioEdit/files``) when the edit exists.
    public func editFile(edit id: String, name: String) throws -> URL? {
        guard UUID(uuidString: id) != nil, StudioEdit.files.contains(name),
            try database.read({ try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM edit WHERE id = ?", arguments: [id]) }) == 1
        else { return nil }
        return editsFolder.appendingPathComponent(id, isDirectory: true).appendingPathComponent(name)
    }

    /// Image and edit folders without a committed row (a kill between writing and committing).
    private func removeOrphanedImages() throws {
        for (table, parent) in [("run", imagesFolder), ("edit", editsFolder)] {
            let known = Set(try database.read { try String.fetchAll($0, sql: "SELECT id FROM \(table)") })
            let folders = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
            for name in folders where !known.contains(name) {
                try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
            }
        }
    }
}
