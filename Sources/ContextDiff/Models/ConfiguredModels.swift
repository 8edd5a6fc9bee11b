import NN

extension UNet: ConfiguredModel {}
extension ContextAdapter: ConfiguredModel {}
extension ClassLabelEncoder: ConfiguredModel {}
