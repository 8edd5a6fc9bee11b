import Foundation
import Testing
import TestSupport

@testable import ContextDiff

@Suite("Provenance: model folders record recipes, not local paths")
struct ProvenanceTests {
    @Test func portableCommandsDropMachinePaths() {
        let command = Provenance.portableCommand([
            "/work/exp/bin/cd-lp2", "train", "-o", "/work/exp/lp2", "--config", "docs/recipes/relations-v2.json",
            "--init-from", "/work/exp/v2/model", "--steps", "2500", "--prompt-file=/home/me/prompts.txt", "--output=/tmp/x",
        ])
        #expect(command == "contextdiff train -o RUN --config docs/recipes/relations-v2.json --init-from INIT --steps 2500 --prompt-file=prompts.txt --output=RUN")
        #expect(!command.contains("/work") && !command.contains("/tmp") && !command.contains("/home"))
        #expect(Provenance.portableCommand(["contextdiff", "generate", "a red circle"]) == "contextdiff generate 'a red circle'")
    }

    @Test func theShippedModelRecordsNoLocalPath() throws {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("models/default/model_index.json"))
        let index = try JSONDecoder().decode(ModelIndex.self, from: data)
        #expect(index.notes["command"]?.hasPrefix("contextdiff train") == true)
        for (key, value) in index.notes {
            for prefix in ["/work", "/tmp", "/home", "/root"] { #expect(!value.contains(prefix), "\(key): \(value)") }
        }
    }
}
