import ContextDiff
import Datasets
import Evaluation

/// Why a video's layout could not be read for an edit.
public enum SourceLayoutError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A prompt is outside the caption grammar, so its objects are unknown.
    case promptNotReadable(which: String, prompt: String)
    /// The prompts name different numbers of objects.
    case objectCountDiffers(source: Int, target: Int)
    /// The two prompts' relations differ ("left of" → "above"): the source's places cannot serve.
    case relationDiffers
    /// No frame shows the source prompt's objects on a plain background.
    case objectsNotFound(expected: Int)

    public var description: String {
        switch self {
        case let .promptNotReadable(which, prompt):
            "the \(which) prompt \"\(prompt)\" does not name objects the layout reader knows (\"a red circle\", \"a blue square above a green triangle\")"
        case let .objectCountDiffers(s, t): "the source prompt names \(s) object(s), the target \(t)"
        case .relationDiffers: "the target prompt changes the relation between the objects"
        case let .objectsNotFound(n): "no frame shows \(n) object(s) on a plain background"
        }
    }
}

/// The layout of a source video for an edit (``VideoEditLayouts``): the objects the source
/// prompt names are found in every frame (``ForegroundObjects``, matched to the prompt's objects
/// by colour and relation) and the target prompt's objects take their places, object for object
/// (the i-th object of one prompt is the i-th of the other). A target object whose stated size
/// differs from the source's keeps its centre and gets the size's box side. Frames where the
/// objects cannot be told apart (merged, hidden) take the boxes of the nearest frames that
/// can, linearly interpolated.
public struct SourceLayoutTracking: Sendable {
    public var finder = ForegroundObjects()

    public init() {}

    /// Per-frame layouts for editing `frames` from `sourcePrompt` to `targetPrompt`.
    public func layouts(frames: [RGBImage], sourcePrompt: String, targetPrompt: String) throws -> VideoEditLayouts {
        guard let source = CaptionParser.parse(sourcePrompt) else {
            throw SourceLayoutError.promptNotReadable(which: "source", prompt: sourcePrompt)
        }
        guard let target = CaptionParser.parse(targetPrompt) else {
            throw SourceLayoutError.promptNotReadable(which: "target", prompt: targetPrompt)
        }
        guard source.objects.count == target.objects.count else {
            throw SourceLayoutError.objectCountDiffers(source: source.objects.count, target: target.objects.count)
        }
        guard source.relation == target.relation else { throw SourceLayoutError.relationDiffers }
        let n = source.objects.count
        let found: [[[Double]]?] = frames.map { frame in
            finder.objects(in: frame).flatMap { Self.assign($0, to: source) }
        }
        guard found.contains(where: { $0 != nil }) else { throw SourceLayoutError.objectsNotFound(expected: n) }
        let boxes = Self.filled(found)
        func phrase(_ o: PromptObject) -> String { [o.size?.rawValue, o.color.rawValue, o.shape.rawValue].compactMap { $0 }.joined(separator: " ") }
        var sourceLayouts: [Layout] = [], targetLayouts: [Layout] = []
        for frame in boxes {
            sourceLayouts.append(Layout(objects: zip(source.objects, frame).map { Layout.Object(phrase: phrase($0), box: $1) }))
            targetLayouts.append(Layout(objects: zip(zip(source.objects, target.objects), frame).map { pair, box in
                Layout.Object(phrase: phrase(pair.1), box: Self.resized(box, from: pair.0.size, to: pair.1.size))
            }))
        }
        return VideoEditLayouts(source: sourceLayouts, target: targetLayouts)
    }

    /// What an edit paints by default with a model that has a layout prior: the source's
    /// layouts when the video and the prompts can be read, else none and the reason, for the
    /// caller to show.
    public func defaultLayouts(frames: [RGBImage], sourcePrompt: String, targetPrompt: String) -> (VideoEditLayouts?, notice: String?) {
        do {
            return (try layouts(frames: frames, sourcePrompt: sourcePrompt, targetPrompt: targetPrompt), nil)
        } catch {
            return (nil, "no layout painted (\(error)); the inversion alone carries the source's layout")
        }
    }

    /// The boxes of `objects` for the prompt's objects in order, or nil when the frame does not
    /// show as many. Among the ways to pick them, the one whose colours match the prompt's best,
    /// then that keeps the prompt's relation, then the largest regions.
    static func assign(_ objects: [ForegroundObject], to prompt: PromptSpec) -> [[Double]]? {
        let n = prompt.objects.count
        let candidates = Array(objects.prefix(8))
        guard candidates.count >= n, n > 0 else { return nil }
        var best: (score: Double, boxes: [[Double]])?
        func visit(_ chosen: [Int]) {
            if chosen.count == n {
                let picked = chosen.map { candidates[$0] }
                var score = 0.0
                for (o, p) in zip(picked, prompt.objects) where o.color == p.color { score += 4 }
                if let relation = prompt.relation, n == 2 {
                    let (a, b) = (picked[0].center, picked[1].center)
                    let holds = switch relation {
                    case .leftOf: a.x < b.x
                    case .rightOf: a.x > b.x
                    case .above: a.y < b.y
                    case .below: a.y > b.y
                    }
                    if holds { score += 2 }
                }
                score += Double(picked.map(\.area).reduce(0, +)) / Double(max(1, objects.map(\.area).reduce(0, +)))
                if best == nil || score > best!.score { best = (score, picked.map(\.box)) }
                return
            }
            for i in candidates.indices where !chosen.contains(i) { visit(chosen + [i]) }
        }
        visit([])
        return best?.boxes
    }

    /// `found` with every nil frame replaced by the linear interpolation of the nearest frames
    /// before and after that have boxes (the nearest one at either end).
    static func filled(_ found: [[[Double]]?]) -> [[[Double]]] {
        let known = found.indices.filter { found[$0] != nil }
        return found.indices.map { i in
            if let boxes = found[i] { return boxes }
            let before = known.last { $0 < i }, after = known.first { $0 > i }
            switch (before, after) {
            case let (b?, a?):
                let u = Double(i - b) / Double(a - b)
                return zip(found[b]!, found[a]!).map { p, q in zip(p, q).map { $0 + ($1 - $0) * u } }
            case let (b?, nil): return found[b]!
            case let (nil, a?): return found[a]!
            case (nil, nil): return []
            }
        }
    }

    /// `box` with the side of `to` around its centre when the sizes differ and `to` is stated.
    static func resized(_ box: [Double], from: ObjectSize?, to: ObjectSize?) -> [Double] {
        guard let to, to != from else { return box }
        let half = to.fraction / 2
        let cx = min(max((box[0] + box[2]) / 2, half), 1 - half)
        let cy = min(max((box[1] + box[3]) / 2, half), 1 - half)
        return [cx - half, cy - half, cx + half, cy + half]
    }
}
