import Testing
import Workflows

@Suite("Thread settings of the commands")
struct ThreadSettingsTests {
    /// OpenBLAS gets one thread beside libtorch's unless the environment names a count. (The
    /// policy alone: applying it changes process-wide settings that other tests read.)
    @Test func openBLASGetsOneThreadUnlessTheEnvironmentSaysOtherwise() {
        #expect(ThreadSettings.blasThreads(environment: [:]) == 1)
        #expect(ThreadSettings.blasThreads(environment: ["PATH": "/usr/bin"]) == 1)
        #expect(ThreadSettings.blasThreads(environment: ["OPENBLAS_NUM_THREADS": "2"]) == nil, "an explicit count wins")
    }
}
