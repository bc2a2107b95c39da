/**
 * `#shared/formats`: the file formats the pipeline reads and writes, as pure byte codecs (bytes in,
 * tensors out and back): NumPy .npy, safetensors, PyTorch .pt (zip + pickle subset), zip, float16,
 * JSON text with positions, and the PNG chunk walker that names a broken image's fault.
 */
export * from './fp16.ts';
export * from './npy.ts';
export * from './safetensors.ts';
export * from './zip.ts';
export * from './torchPt.ts';
export * from './jsonText.ts';
export * from './imageDamage.ts';
