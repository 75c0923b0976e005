// Types of build-console.mjs, for the tests (TypeScript) that build the console before driving it.
export declare const CONSOLE_SOURCE: string;
export declare const CONSOLE_OUT: string;
export declare function consoleViteConfig(outDir: string): Promise<Record<string, unknown>>;
export declare function buildConsole(options?: { outDir?: string; force?: boolean }): Promise<{ outDir: string; built: boolean }>;
