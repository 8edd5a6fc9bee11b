import NN

extension UNet: ConfiguredModel {}
extension ContextAdapter: ConfiguredModel {}
