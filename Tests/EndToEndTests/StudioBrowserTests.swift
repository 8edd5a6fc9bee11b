import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// A minimal W3C WebDriver client over chromedriver's HTTP API (no Selenium).
struct WebDriver {
    static let chromedriver = "/usr/bin/chromedriver"
    static let chromium = "/usr/bin/chromium"
    static var available: Bool {
        FileManager.default.isExecutableFile(atPath: chromedriver) && FileManager.default.isExecutableFile(atPath: chromium)
    }

    let base: URL
    let session: String
    let process: Process

    /// Starts chromedriver and a headless Chromium session.
    static func start() async throws -> WebDriver {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = Int.random(in: 20_000..<40_000)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: chromedriver)
            process.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let base = URL(string: "http://127.0.0.1:\(port)")!
            do {
                let deadline = Date().addingTimeInterval(20)
                var last = "no answer"
                while true {
                    do {
                        let status = try await request(base, "GET", "/status")
                        if (status["value"] as? [String: Any])?["ready"] as? Bool == true { break }
                        last = "\(status)"
                    } catch {
                        last = "\(error)"
                    }
                    guard Date() < deadline, process.isRunning else { throw WebDriverError("chromedriver did not start: \(last)") }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let capabilities: [String: Any] = [
                    "capabilities": ["alwaysMatch": [
                        "browserName": "chrome",
                        "goog:chromeOptions": [
                            "binary": chromium,
                            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"],
                        ],
                    ]],
                ]
                let created = try await request(base, "POST", "/session", capabilities)
                guard let session = (created["value"] as? [String: Any])?["sessionId"] as? String else {
                    throw WebDriverError("no session: \(created)")
                }
                return WebDriver(base: base, session: session, process: process)
            } catch {
                kill(process)
                lastError = error
            }
        }
        throw lastError ?? WebDriverError("chromedriver did not start")
    }

    func stop() async {
        _ = try? await Self.request(base, "DELETE", "/session/\(session)")
        Self.kill(process)
    }

    /// chromedriver outlives SIGTERM at times: SIGKILL, then reap.
    static func kill(_ process: Process) {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    @discardableResult
    func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        let reply = try await Self.request(base, method, "/session/\(session)\(path)", body ?? (method == "POST" ? [:] : nil))
        if let value = reply["value"] as? [String: Any], let error = value["error"] as? String {
            throw WebDriverError("\(method) \(path): \(error): \(value["message"] ?? "")")
        }
        return reply["value"]
    }

    func open(_ url: String) async throws { try await command("POST", "/url", ["url": url]) }

    func element(_ css: String) async throws -> String {
        let value = try await command("POST", "/element", ["using": "css selector", "value": css]) as? [String: Any]
        guard let id = value?.values.first as? String else { throw WebDriverError("no element \(css)") }
        return id
    }

    func click(_ css: String) async throws { try await command("POST", "/element/\(element(css))/click") }

    /// Replaces the field's text as a person does: select all (Ctrl-A), then type.
    func type(_ css: String, _ text: String) async throws {
        let id = try await element(css)
        try await command("POST", "/element/\(id)/click")
        try await command("POST", "/element/\(id)/value", ["text": "\u{E009}a\u{E000}\u{E003}" + text])
    }

    /// Runs `script` (a function body) in the page and returns its value.
    func evaluate(_ script: String) async throws -> Any? {
        try await command("POST", "/execute/sync", ["script": script, "args": []])
    }

    /// Waits until `script` returns true (10 s, or `timeout`).
    func waitUntil(_ what: String, timeout: TimeInterval = 20, _ script: String) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await evaluate(script) as? Bool == true { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw WebDriverError("timed out waiting for \(what)")
    }

    func screenshot() async throws -> Data {
        guard let base64 = try await command("GET", "/screenshot") as? String, let data = Data(base64Encoded: base64) else {
            throw WebDriverError("no screenshot")
        }
        return data
    }

    static func request(_ base: URL, _ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        // AsyncHTTPClient: corelibs Foundation's URLSession fails on chromedriver's answers
        // ("Failed writing header").
        var request = HTTPClientRequest(url: base.absoluteString + path)
        request.method = .init(rawValue: method)
        if let body {
            request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: body))))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return (try JSONSerialization.jsonObject(with: Data(bytes.readableBytesView)) as? [String: Any]) ?? [:]
    }
}

struct WebDriverError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `contextdiff serve` as a child process on a free port, with its history in `data`.
struct StudioProcess {
    let process: Process
    let port: Int
    let output: URL

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func start(data: URL, extra: [String] = []) async throws -> StudioProcess {
        let output = data.deletingLastPathComponent().appendingPathComponent("serve-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let process = Process()
        process.executableURL = CLI.binary
        process.arguments = [
            "serve", "--model", repository.appendingPathComponent("models/default").path, "--port", "0",
            "--data-dir", data.path, "--threads", "1", "--max-steps", "1000",
        ] + extra
        let log = try FileHandle(forWritingTo: output)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, process.isRunning {
            let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
            if let match = text.firstMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\//), let port = Int(match.1) {
                return StudioProcess(process: process, port: port, output: output)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        WebDriver.kill(process)
        throw WebDriverError("the studio did not start: \((try? String(contentsOf: output, encoding: .utf8)) ?? "")")
    }

    func api(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        try await WebDriver.request(URL(string: "http://127.0.0.1:\(port)")!, method, path, body)
    }

    func stop() { WebDriver.kill(process) }
}

@Suite("Studio: `contextdiff serve` driven in a real browser (headless Chromium)", .serialized)
struct StudioBrowserTests {
    /// A person's session on the shipped model: type a prompt, press Generate, see the
    /// progress advance and the images appear; Generate again and Cancel; the server is killed
    /// mid-run and restarted; the gallery still has the finished run, and selecting it reloads
    /// its settings. `STUDIO_SCREENSHOT=PATH` keeps a screenshot of the page at the end.
    @Test(.enabled(if: WebDriver.available, "needs chromium and chromium-driver (scripts/setup.sh installs them)"))
    func aUserGeneratesCancelsAndReloadsFromTheGalleryAcrossARestart() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("studio-browser-\(UUID().uuidString)")
        let data = root.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        var server = try await StudioProcess.start(data: data)
        let browser = try await WebDriver.start()
        do {
            try await browser.open("http://127.0.0.1:\(server.port)/")
            try await browser.waitUntil("the model line", "return document.getElementById('model-info').textContent.includes('default')")

            // First run. The browser samples the progress bar itself (every 5 ms), so the check
            // does not depend on how fast this process polls.
            try await browser.type("#prompt", "a red circle to the left of a blue square")
            try await browser.type("#steps", "20")
            try await browser.type("#num-images", "4")
            try await browser.click("#randomize")
            try await browser.type("#seed", "42")
            _ = try await browser.evaluate("""
                window.seen = [];
                setInterval(() => window.seen.push(document.getElementById('progress').value), 5);
                """)
            try await browser.click("#generate")
            try await browser.waitUntil("four images", timeout: 300, """
                const images = [...document.querySelectorAll('#results img')];
                return images.length === 4 && images.every((i) => i.complete && i.naturalWidth === 128);
                """)
            let seen = try await browser.evaluate("return window.seen") as? [Any] ?? []
            let values = seen.compactMap { ($0 as? NSNumber)?.doubleValue }
            #expect(values.contains { $0 > 0 && $0 < 20 } && values.last == 20, "progress values seen: \(Set(values).sorted())")
            let status = try await browser.evaluate("return document.getElementById('status').textContent") as? String ?? ""
            #expect(status.hasPrefix("Done in") && status.hasSuffix("seed 42"), "\(status)")

            // Second run: cancelled while it runs.
            try await browser.type("#steps", "1000")
            try await browser.type("#num-images", "8")
            try await browser.click("#generate")
            try await browser.waitUntil("the second run to step", timeout: 300, "return document.getElementById('status').textContent.startsWith('Step')")
            // The denoising preview: eight 32-pixel estimates side by side (2-pixel gutters).
            try await browser.waitUntil("the denoising preview", timeout: 300, """
                const box = document.getElementById('preview-box'), image = document.getElementById('preview');
                return !box.classList.contains('hidden') && image.complete && image.naturalWidth === 8 * 32 + 7 * 2 && image.naturalHeight === 32;
                """)
            try await browser.click("#cancel")
            try await browser.waitUntil("the cancellation", timeout: 300, "return document.getElementById('status').textContent === 'Cancelled.'")
            #expect(try await browser.evaluate("return document.getElementById('generate').disabled") as? Bool == false)
            #expect(try await browser.evaluate("return document.getElementById('preview-box').classList.contains('hidden')") as? Bool == true)

            // Third run: the server is killed (SIGKILL) while it samples, then started again.
            try await browser.click("#generate")
            try await browser.waitUntil("the third run to step", timeout: 300, "return document.getElementById('status').textContent.startsWith('Step')")
            server.stop()
            let images = data.appendingPathComponent("images")
            #expect(try FileManager.default.contentsOfDirectory(atPath: images.path).count == 1)
            server = try await StudioProcess.start(data: data)
            let runs = try await server.api("GET", "/api/runs")["runs"] as? [[String: Any]] ?? []
            #expect(runs.count == 1 && runs.first?["prompt"] as? String == "a red circle to the left of a blue square", "\(runs)")
            let folders = try FileManager.default.contentsOfDirectory(atPath: images.path)
            #expect(folders.count == 1)
            let files = try FileManager.default.contentsOfDirectory(atPath: images.appendingPathComponent(folders[0]).path).sorted()
            #expect(files == ["0.png", "1.png", "2.png", "3.png"], "\(files)")

            // The gallery of the new server lists the finished run; selecting it reloads its settings.
            try await browser.open("http://127.0.0.1:\(server.port)/")
            try await browser.waitUntil("the page", "return document.getElementById('model-info').textContent.includes('default')")
            try await browser.type("#prompt", "something else")
            try await browser.click("#tab-gallery")
            try await browser.waitUntil("the gallery", "return document.querySelectorAll('#gallery figure').length === 1")
            try await browser.click("#gallery figure")
            try await browser.waitUntil("the reloaded settings", """
                return document.getElementById('prompt').value === 'a red circle to the left of a blue square'
                    && document.getElementById('seed').value === '42' && document.getElementById('steps').value === '20'
                    && document.getElementById('num-images').value === '4' && !document.getElementById('randomize').checked
                    && !document.getElementById('panel-generate').classList.contains('hidden')
                    && [...document.querySelectorAll('#results img')].filter((i) => i.complete && i.naturalWidth === 128).length === 4;
                """)
            let screenshot = try await browser.screenshot()
            #expect(screenshot.starts(with: [0x89, 0x50, 0x4E, 0x47]))
            if let path = ProcessInfo.processInfo.environment["STUDIO_SCREENSHOT"] {
                try screenshot.write(to: URL(fileURLWithPath: path), options: .atomic)
            }
            await browser.stop()
            server.stop()
        } catch {
            let page = try? await browser.evaluate("return document.body.innerText.slice(0, 400)")
            await browser.stop()
            server.stop()
            throw WebDriverError("\(error); the page: \(page.map { "\($0 ?? "nil")" } ?? "unreadable"); the server: \((try? String(contentsOf: server.output, encoding: .utf8)) ?? "")")
        }
    }
}
