"""Parts of the GPU throughput benchmark (bench/gpu_throughput.py): what is measured
(tasks), how (runner, engines, batches), the arithmetic (stats) and the report."""
