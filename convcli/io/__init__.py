"""Reading and writing files: the one input-format dispatcher, images, arrays, atomic
writes. Above the engine, below the batch runner."""
