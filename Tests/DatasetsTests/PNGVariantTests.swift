import Foundation
import Testing
@testable import Datasets

/// Tiny 8×4 images in formats our writer never produces, made with ffmpeg (one-liner per case:
/// `ffmpeg -f lavfi -i "color=c=0x3366cc[@0.5]:s=8x4,format=FMT" -frames:v 1 OUT`).
@Suite("PNG/JPEG variants")
struct PNGVariantTests {
    static let cases: [(name: String, base64: String, expected: RGBColor?, tolerance: Int)] = [
        ("gray.png", "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAECAAAAACWpiEsAAAACXBIWXMAAAABAAAAAQBPJcTWAAAADklEQVR4nGNIgQIG3AwA4SQMgXb8DHkAAAAASUVORK5CYII=",
         RGBColor(100, 100, 100), 0),
        // format=rgba with alpha 127: composited over white.
        ("rgba.png", "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAECAYAAACzzX7wAAAACXBIWXMAAAABAAAAAQBPJcTWAAAAEklEQVR4nGMwTjtTjw8z0F4BAIXFPIHOprFjAAAAAElFTkSuQmCC",
         RGBColor(153, 179, 230), 0),
        ("rgb48.png", "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAEEAIAAABsPzXkAAAACXBIWXMAAAABAAAAAQBPJcTWAAAAFUlEQVR4nGMwMEhNPXmSeJJh8GkAADUzV4GNpHtuAAAAAElFTkSuQmCC",
         RGBColor(48, 101, 202), 2),
        ("pal.png", "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAECAMAAACEE47CAAAACXBIWXMAAAABAAAAAQBPJcTWAAADAFBMVEUAAAAkAABIAABsAACQAAC0AADYAAD8AAAAJAAkJABIJABsJACQJAC0JADYJAD8JAAASAAkSABISABsSACQSAC0SADYSAD8SAAAbAAkbABIbABsbACQbAC0bADYbAD8bAAAkAAkkABIkABskACQkAC0kADYkAD8kAAAtAAktABItABstACQtAC0tADYtAD8tAAA2AAk2ABI2ABs2ACQ2AC02ADY2AD82AAA/AAk/ABI/ABs/ACQ/AC0/ADY/AD8/AAAAFUkAFVIAFVsAFWQAFW0AFXYAFX8AFUAJFUkJFVIJFVsJFWQJFW0JFXYJFX8JFUASFUkSFVISFVsSFWQSFW0SFXYSFX8SFUAbFUkbFVIbFVsbFWQbFW0bFXYbFX8bFUAkFUkkFVIkFVskFWQkFW0kFXYkFX8kFUAtFUktFVItFVstFWQtFW0tFXYtFX8tFUA2FUk2FVI2FVs2FWQ2FW02FXY2FX82FUA/FUk/FVI/FVs/FWQ/FW0/FXY/FX8/FUAAKokAKpIAKpsAKqQAKq0AKrYAKr8AKoAJKokJKpIJKpsJKqQJKq0JKrYJKr8JKoASKokSKpISKpsSKqQSKq0SKrYSKr8SKoAbKokbKpIbKpsbKqQbKq0bKrYbKr8bKoAkKokkKpIkKpskKqQkKq0kKrYkKr8kKoAtKoktKpItKpstKqQtKq0tKrYtKr8tKoA2Kok2KpI2Kps2KqQ2Kq02KrY2Kr82KoA/Kok/KpI/Kps/KqQ/Kq0/KrY/Kr8/KoAAP8kAP9IAP9sAP+QAP+0AP/YAP/8AP8AJP8kJP9IJP9sJP+QJP+0JP/YJP/8JP8ASP8kSP9ISP9sSP+QSP+0SP/YSP/8SP8AbP8kbP9IbP9sbP+QbP+0bP/YbP/8bP8AkP8kkP9IkP9skP+QkP+0kP/YkP/8kP8AtP8ktP9ItP9stP+QtP+0tP/YtP/8tP8A2P8k2P9I2P9s2P+Q2P+02P/Y2P/82P8A/P8k/P9I/P9s/P+Q/P+0/P/Y/P/8/P+BTFLuAAAAIElEQVR4nGOYeXPWTRBmmDjr4iwQZgDxQRAoAuLPnAUAjboVtA6D83sAAAAASUVORK5CYII=",
         nil, 0),
        ("gray.jpg", "/9j/4AAQSkZJRgABAgAAAQABAAD//gAQTGF2YzU5LjM3LjEwMAD/2wBDAAgEBAQEBAUFBQUFBQYGBgYGBgYGBgYGBgYHBwcICAgHBwcGBgcHCAgICAkJCQgICAgJCQoKCgwMCwsODg4RERT/xABLAAEBAAAAAAAAAAAAAAAAAAAABQEBAAAAAAAAAAAAAAAAAAAAABABAAAAAAAAAAAAAAAAAAAAABEBAAAAAAAAAAAAAAAAAAAAAP/AABEIAAQACAMBEgACEgADEgD/2gAMAwEAAhEDEQA/AIYAP//Z",
         RGBColor(100, 100, 100), 3),
    ]

    @Test func decodesEveryVariantToRGB8() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanUp() }
        for c in Self.cases {
            try Data(base64Encoded: c.base64)!.write(to: dir.file(c.name))
            let image = try RGBImage(contentsOf: dir.file(c.name))
            #expect(image.width == 8 && image.height == 4, "\(c.name)")
            if let expected = c.expected {
                for y in 0..<4 {
                    for x in 0..<8 {
                        let p = image[x, y]
                        let close = abs(Int(p.r) - Int(expected.r)) <= c.tolerance
                            && abs(Int(p.g) - Int(expected.g)) <= c.tolerance
                            && abs(Int(p.b) - Int(expected.b)) <= c.tolerance
                        #expect(close, "\(c.name) (\(x), \(y)): \(p)")
                    }
                }
            } else {
                // Dithered palette: the first pixels as ffmpeg decodes them.
                #expect(image[0, 0] == RGBColor(36, 108, 170) && image[1, 0] == RGBColor(36, 108, 255))
            }
        }
    }
}
