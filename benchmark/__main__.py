from benchmark.cli import console

console()
