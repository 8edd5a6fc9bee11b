import Torch

/// One synthetic video: the scene's objects moving in straight lines over the frames, with the
/// caption and the labels of every frame.
public struct SceneVideo: Sendable {
    public var annotation: SceneAnnotation
    /// The labels of each frame (same objects and relation, moved boxes).
    public var scenes: [Scene]
    public var frames: [RGBImage]

    public var caption: String { annotation.caption }

    /// The frames as a ``Video``.
    public func video(fps: Double = 8) throws -> Video { try Video(frames: frames, fps: fps) }
}

extension SyntheticBenchmark {
    /// Sample `index` of `split` as a video of `frames` frames: the scene of
    /// ``annotation(index:split:)`` (so the same caption) whose objects glide from one end of
    /// their allowed range to the other, each along the axis that leaves the caption true — a
    /// single object left↔right, a pair along the axis across its relation (left/right pairs move
    /// up/down and stay in their halves). Deterministic from (seed, split, index).
    public func video(index: Int, split: Split, frames: Int = 8) throws -> SceneVideo {
        guard (1...256).contains(frames) else { throw DatasetError.invalidConfig("frames must be in 1...256, got \(frames)") }
        let annotation = annotation(index: index, split: split)
        var rng = SplitMix64(seed: SplitMix64.derive(config.seed, 0x5649_4445, split.salt, UInt64(bitPattern: Int64(index))))
        let n = Double(config.imageSize)
        let margin = 0.03 * n
        let scene = annotation.scene
        // Per object: the axis it moves along (true: x) and its start and end offsets of minX/minY.
        var paths: [(alongX: Bool, from: Double, to: Double)] = []
        for object in scene.objects {
            let alongX: Bool = switch scene.relation {
            case nil: true
            case .some(let r): !r.isHorizontal
            }
            let side = alongX ? object.bbox.width : object.bbox.height
            let lo = margin, hi = Swift.max(margin, n - margin - side)
            let forward = rng.uniform(below: 2) == 0
            paths.append((alongX, forward ? lo : hi, forward ? hi : lo))
        }
        var scenes: [Scene] = []
        for k in 0..<frames {
            let u = frames == 1 ? 0 : Double(k) / Double(frames - 1)
            var moved = scene
            moved.objects = zip(scene.objects, paths).map { object, path in
                let p = ((path.from + (path.to - path.from) * u) * 4).rounded() / 4
                var box = object.bbox
                if path.alongX {
                    box = BoundingBox(minX: p, minY: box.minY, maxX: p + box.width, maxY: box.maxY)
                } else {
                    box = BoundingBox(minX: box.minX, minY: p, maxX: box.maxX, maxY: p + box.height)
                }
                return SceneObject(shape: object.shape, color: object.color, size: object.size, bbox: box)
            }
            scenes.append(moved)
        }
        return SceneVideo(annotation: annotation, scenes: scenes, frames: scenes.map(render))
    }
}
