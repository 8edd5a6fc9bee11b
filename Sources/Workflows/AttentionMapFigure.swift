import ContextDiff
import Datasets
import Foundation
import Torch

/// The figure of `contextdiff attention-maps` (paper App. A): per word of the prompt, its
/// cross-attention map over the denoising steps, one row per word, the generated image first.
public enum AttentionMapFigure {
    /// The words of `prompt` (letters and digits) with the positions of their tokens in the
    /// tokenized prompt, in order.
    public static func words(of prompt: String, tokenizer: any TextTokenizer) throws -> [(word: String, positions: [Int])] {
        let words = prompt.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).map(String.init)
        guard !words.isEmpty else { throw PipelineError.emptyPrompt }
        let ids = tokenizer.encode(prompt)
        guard let positions = TokenGrounding.tokenPositions(
            ids: ids, objects: words.map { [$0] }, pieces: { Array(tokenizer.encode($0).dropFirst().dropLast()) })
        else { throw PipelineError.invalidOption("prompt: its words could not be found among its tokens") }
        return zip(words, positions).filter { $0.1.allSatisfy { $0 < ids.count } }.map { ($0.0, $0.1) }
    }

    /// Steps shown: `count` indices spread evenly from the first step to the last.
    public static func shownSteps(of total: Int, count: Int) -> [Int] {
        guard total > 0 else { return [] }
        let n = min(max(count, 1), total)
        if n == 1 { return [total - 1] }
        return (0..<n).map { Int((Double($0) * Double(total - 1) / Double(n - 1)).rounded()) }
    }

    /// One panel: a row per word; in each, the generated image, then the word's map at every
    /// shown step (stretched from its minimum to its maximum: black → red → yellow → white), enlarged
    /// `scale` times. Maps of tokens past the model's token limit are not there: such words are left out.
    public static func panel(
        _ maps: AttentionMaps, words: [(word: String, positions: [Int])], steps: [Int], image b: Int = 0, scale: Int = 4
    ) throws -> RGBImage {
        let tokens = maps.maps.shape[2]
        let kept = words.filter { $0.positions.allSatisfy { $0 < tokens } }
        guard !kept.isEmpty else { throw PipelineError.invalidOption("prompt: no word within the model's token limit") }
        let image = try RGBImage(tensor: maps.images.select(dim: 0, b))
        let picture = try image.enlarged(by: scale)
        var cells: [RGBImage] = []
        for word in kept {
            cells.append(picture)
            let series = try maps.word(word.positions, image: b)  // [steps, H, W]
            for step in steps {
                let map = try series.select(dim: 0, step).contiguous().scalars(as: Float.self)
                cells.append(try heat(map, side: image.width).enlarged(by: scale))
            }
        }
        return try RGBImage.grid(cells, columns: steps.count + 1, gutter: 1)
    }

    /// A map as a heat image, stretched from its minimum (black) to its maximum (white).
    static func heat(_ values: [Float], side: Int) throws -> RGBImage {
        let low = values.min() ?? 0
        let range = max((values.max() ?? 0) - low, 1e-12)
        var pixels = [UInt8](repeating: 0, count: side * side * 3)
        for (i, v) in values.enumerated() {
            let x = Double(min(max((v - low) / range, 0), 1))
            // black → red → yellow → white
            let (r, g, bl) = (min(1, 3 * x), min(1, max(0, 3 * x - 1)), min(1, max(0, 3 * x - 2)))
            pixels[i * 3] = UInt8((r * 255).rounded())
            pixels[i * 3 + 1] = UInt8((g * 255).rounded())
            pixels[i * 3 + 2] = UInt8((bl * 255).rounded())
        }
        return try RGBImage(width: side, height: side, pixels: pixels)
    }
}
