/// GGML block dequantization. Placeholder dispatcher: each supported type is implemented in GGMLQuant.swift.
public enum GGMLDequant {
    public enum Error: Swift.Error { case unsupported(String) }
    public static func decode(_ type: String, _ src: UnsafeRawPointer, blocks: Int, _ dst: UnsafeMutablePointer<Float>) throws {
        throw Error.unsupported(type)
    }
}
