// Readers that later work fills in. Until then they refuse with a message that says so.
public enum TorchReader {
    public static func read(path: String, archive: ZipArchive, options: CheckpointOpener.Options) throws -> Checkpoint {
        throw FormatError(.unsupported, "PyTorch zip checkpoints are not supported yet")
    }
}
public enum PickleFileReader {
    public static func read(path: String, options: CheckpointOpener.Options) throws -> Checkpoint {
        throw FormatError(.unsupported, "pickle files (legacy PyTorch, .pkl) are not supported yet")
    }
}
