import ContextDiff
import Datasets
import Foundation
import Torch

extension ImageStart {
    /// An image to start from, read from a file, and an optional mask (a file: light pixels
    /// repaint, dark ones keep, as in diffusers; or a box `[x0, y0, x1, y1]` in fractions of the
    /// side, every pixel whose centre lies inside it repainted). Both are resized to `size` when
    /// they differ (`notices` says so).
    public static func load(
        image imageURL: URL, strength: Double, mask maskURL: URL? = nil, maskBox: [Double]? = nil, size: Int
    ) throws -> (start: ImageStart, notices: [String]) {
        guard maskURL == nil || maskBox == nil else { throw PipelineError.invalidOption("mask: give a file or a box, not both") }
        var notices: [String] = []
        func read(_ url: URL, what: String) throws -> RGBImage {
            var image = try RGBImage(contentsOf: url)
            if image.width != size || image.height != size {
                notices.append("\(what) \(url.lastPathComponent) resized from \(image.width)×\(image.height) to \(size)×\(size)")
                image = try image.resized(width: size, height: size)
            }
            return image
        }
        let image = try read(imageURL, what: "init image").tensor().unsqueezed(0)
        var mask: Tensor?
        if let maskURL {
            let m = try read(maskURL, what: "mask")
            // Light pixels repaint: the mean of the three channels above mid-grey.
            let values = stride(from: 0, to: m.pixels.count, by: 3).map { i -> Float in
                (Int(m.pixels[i]) + Int(m.pixels[i + 1]) + Int(m.pixels[i + 2])) > 3 * 127 ? 1 : 0
            }
            mask = try Tensor(values, shape: [1, 1, size, size])
        } else if let maskBox {
            mask = try boxMask(maskBox, size: size)
        }
        return (ImageStart(image: image, strength: strength, mask: mask), notices)
    }
}
